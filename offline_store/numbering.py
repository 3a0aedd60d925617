"""Numbering: each fresh inbox entry of a batch gets its uid's next ``seq``.

The store's numbering statement (``inbox_tables.py``) raises each uid's head in
``inbox_heads`` by the number of the batch's fresh entries for that uid, and returns the new
heads. A uid's entries then take, in batch order, ``head - n + 1 .. head``: gap-free and strictly
increasing per uid, because the head row stays locked until the commit, so the next writer of
that uid numbers after these (``docs/history.md``, section 3). Pure: no I/O.
"""

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EntryKey:
    """One entry: a message (``mid``) in one uid's inbox."""

    uid: str
    mid: str


def entry_counts(entries: Iterable[EntryKey]) -> dict[str, int]:
    """How many entries each uid gets, in the order of its first entry.

    Args:
        entries: the fresh entries of a batch (each key once).
    """
    counts: dict[str, int] = {}
    for entry in entries:
        counts[entry.uid] = counts.get(entry.uid, 0) + 1
    return counts


def number_entries(
    entries: Iterable[EntryKey], heads: Mapping[str, int]
) -> dict[EntryKey, int]:
    """Give each entry its ``seq``: a uid's entries, in order, end at its new head.

    Args:
        entries: the fresh entries of a batch, each key once, in batch order.
        heads: each of their uids' head after the batch's increment (the numbering statement's
            result).

    Returns:
        The ``seq`` of each entry.

    Raises:
        ValueError: a uid has no head, or a head lower than its number of entries.
    """
    ordered = list(entries)
    counts = entry_counts(ordered)
    next_seq: dict[str, int] = {}
    for uid, count in counts.items():
        head = heads.get(uid)
        if head is None or head < count:
            raise ValueError(f"no head for {count} entries of a uid")
        next_seq[uid] = head - count + 1
    seqs: dict[EntryKey, int] = {}
    for entry in ordered:
        seqs[entry] = next_seq[entry.uid]
        next_seq[entry.uid] += 1
    return seqs


def batch_seqs(
    entries: Iterable[EntryKey],
    fresh_mids: Set[str],
    heads: Mapping[str, int],
    kept: Mapping[EntryKey, int],
) -> dict[EntryKey, int]:
    """The ``seq`` of every entry of a batch: fresh ones numbered, the others as kept.

    A message already in ``messages`` (a redelivered batch whose transaction committed before a
    failure, or a message routed twice) is not numbered again: its entries keep the numbers they
    were given, read back from ``inbox``.

    Args:
        entries: the batch's entries, each key once, in batch order.
        fresh_mids: the mids this transaction inserted into ``messages``.
        heads: the new heads of the fresh entries' uids.
        kept: the ``seq`` read back of entries whose mid was not fresh.
    """
    ordered = list(entries)
    seqs = number_entries((e for e in ordered if e.mid in fresh_mids), heads)
    for entry in ordered:
        if entry.mid not in fresh_mids and entry in kept:
            seqs[entry] = kept[entry]
    return seqs
