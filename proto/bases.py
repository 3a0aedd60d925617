"""The base classes of every envelope and every backend command body.

Apart from ``envelopes.py`` so that the modules of other flows (``sync.py``) can define theirs
without importing the table of every envelope, which lists their commands in turn.
"""

import msgspec


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every envelope."""


class Command(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every backend command body."""
