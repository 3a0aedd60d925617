"""Numbering: each fresh inbox entry of a batch gets its uid's next ``seq``.

The rule (``docs/history.md``, section 3): a batch raises each uid's head in ``inbox_heads`` by
the number ``n`` of its fresh entries for that uid, and the uid's entries take, in batch order,
``head - n + 1 .. head``. Gap-free and strictly increasing per uid, because the head row stays
locked until the commit, so the next writer of that uid numbers after these. The write statement
(``inbox_tables.py``) applies it in SQL, since the inbox rows it inserts need their ``seq`` in the
same statement, and returns each fresh entry's number. An entry of a message kept before (a
redelivered batch) is not numbered again: it keeps the number it was given, read back.

Pure: no I/O.
"""

from collections.abc import Mapping
from typing import NamedTuple


class EntryKey(NamedTuple):
    """One entry: a message (``mid``) in one uid's inbox.

    A named tuple, not a dataclass: a batch hashes one for each of its entries several times,
    and a tuple is built and hashed in C (a frozen dataclass's ``__init__`` and ``__hash__`` run
    in Python, at several times the cost).
    """

    uid: str
    mid: str


def batch_seqs(
    numbered: Mapping[EntryKey, int], kept: Mapping[EntryKey, int]
) -> dict[EntryKey, int]:
    """The ``seq`` of every entry of a batch that has one: fresh ones as the write statement
    numbered them, the others as they were kept.

    A message already in ``messages`` (a redelivered batch whose transaction committed before a
    failure, or a message routed twice) is not numbered again: its entries keep the numbers they
    were given, read back from ``inbox``. An entry with neither is left out (not delivered).

    Args:
        numbered: the ``seq`` of each fresh entry, as this batch's statement gave it.
        kept: the ``seq`` read back of entries whose mid was not fresh.
    """
    return {**kept, **numbered}
