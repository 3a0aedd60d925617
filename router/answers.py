"""What routing needs to know about each envelope of a batch: one typed answer each, made by
lookups.py from what Redis said, read by routing.py.

Pure: no I/O. Answers say what was decided about the results (a retry, a refused group
message, the recipients of a message), so that routing.py decides only what to publish.
"""

from collections.abc import Mapping
from dataclasses import dataclass

from router.limits import Throttled
from router.results import (
    Connections,
    HeartbeatRecorded,
    Opened,
    PresenceEntry,
    RoomCounts,
    UidConnections,
)

# Answers about a message (a client's ``send``, an ``api.send`` or ``api.broadcast``)


@dataclass(frozen=True, slots=True)
class NotMember:
    """A client's group message from a uid that is not a member of the group: refused."""


@dataclass(frozen=True, slots=True)
class Retried:
    """A retry: its client id already carries another mid, which its sender is answered."""

    first_mid: str


@dataclass(frozen=True, slots=True)
class Recipients:
    """A message for a uid, or for the members of a group but its sender (sorted)."""

    by_uid: UidConnections
    own: tuple[PresenceEntry, ...] | None = None
    """With history on, the sender's connections (any gateway), for the message's entry in the
    sender's inbox; None: it enters no inbox of the sender's (history off, a transient, room
    or broadcast message, a backend's ``system``, or a message to the sender itself)."""


@dataclass(frozen=True, slots=True)
class Everyone:
    """A broadcast: one item per live gateway."""


@dataclass(frozen=True, slots=True)
class Multicast:
    """An ``api.send`` to a list of uids: the answer about each of its messages, in the
    order of its uids (``multicast.py``)."""

    per_message: tuple[Retried | Recipients, ...]


NOT_MEMBER = NotMember()
EVERYONE = Everyone()

MessageAnswer = NotMember | Retried | Recipients | RoomCounts | Everyone
"""What to do with a message: a room message is answered with the room's counts."""


@dataclass(frozen=True, slots=True)
class PresenceForbidden:
    """A client's presence query under the ``nobody`` policy: refused, nothing read."""


PRESENCE_FORBIDDEN = PresenceForbidden()

Answer = (
    Opened
    | HeartbeatRecorded
    | Connections
    | RoomCounts
    | PresenceForbidden
    | MessageAnswer
    | Multicast
    | None
)
"""What routing needs to know about one envelope; None: nothing (its requests only write).

``Opened`` for a ``ConnOpened``, ``HeartbeatRecorded`` for a ``Heartbeat``, ``Connections``
for a ``Saved`` (each uid in its order), a ``Receipts`` (each uid of its entries, once), a
presence query (the distinct uids it may see, in order), ``api.kick``, ``api.connections`` and
``api.presence``, ``RoomCounts`` for ``api.room.count``, a ``MessageAnswer`` for a message."""


@dataclass(frozen=True, slots=True)
class Answers:
    """What Redis said about a batch, for routing.py."""

    per_envelope: tuple[Answer, ...]
    """One per envelope, in batch order."""
    throttles: Mapping[int, Throttled]
    """The uids this batch took over their rate, each at the index of its last envelope."""
