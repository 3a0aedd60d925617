"""Read markers: a batch of ``read`` frames (``ReadAsked``) in, what to write and what to answer
out (``docs/history.md``, section 6.3).

A ``read`` names a mid of the reader's inbox. It moves the marker of that conversation up to the
mid, unless the marker is there or further on already; a marker that moves appends a receipt
entry to the party's inbox (the other uid of a 1:1, the sender of the mid in a group; none when
the reader sent it in a group) and one to the reader's, each numbered after its uid's head like a
message. The reading connection is answered ``marked`` (or ``not_found`` when the mid is not in
the reader's inbox); the routers deliver the receipts (``Receipts``) once they are committed.

Reads of one batch are decided in batch order, each seeing the markers the ones before it
moved: a later read of an older mid in the same conversation changes nothing.

Pure: ``readers.py`` does the awaiting, ``marker_tables.py`` the SQL.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import msgspec

from offline_store.replay import GatewayDelivery
from proto import frames
from proto.codes import ErrorCode
from proto.envelopes import Delivery, DeliveryItem, Target
from proto.packing import pack_delivery, runs_within
from proto.sync import ReadAsked, ReadingConnection, ReceiptEntry, ReceiptItem, Receipts
from proto.sync import encode as encode_sync

GROUP_PREFIX = "g:"
PEER_PREFIX = "u:"


@dataclass(frozen=True, slots=True)
class Found:
    """A read's mid in the reader's inbox."""

    seq: int
    conv: str
    """``u:<peer>`` or ``g:<group>``."""
    sender: str
    """Who sent the message."""


@dataclass(frozen=True, slots=True)
class MarkerMove:
    """A conversation's marker, where the batch leaves it."""

    uid: str
    conv: str
    mid: str
    seq: int


@dataclass(frozen=True, slots=True)
class ReceiptRow:
    """One row of ``receipts``: ``reader`` read up to ``mid``, entry ``seq`` of ``uid``."""

    uid: str
    seq: int
    reader: str
    mid: str


@dataclass(slots=True)
class ReadPlan:
    """What a batch of reads writes, answers and announces."""

    replies: list[tuple[ReadAsked, frames.ServerFrame]] = field(default_factory=list)
    """Each read's answer, in batch order: ``marked``, or an ``error`` ``not_found``."""
    moves: list[MarkerMove] = field(default_factory=list)
    """One per conversation whose marker moved: where it ends."""
    receipts: list[ReceiptRow] = field(default_factory=list)
    heads: dict[str, int] = field(default_factory=dict)
    """The new head of every uid that gained receipt entries."""
    items: list[ReceiptItem] = field(default_factory=list)
    """The receipts for the routers, one per read that moved a marker."""


def party_of(reader: str, found: Found) -> str | None:
    """Who gets the receipt of a read besides the reader's other devices.

    The other uid of a 1:1 conversation (the reader itself for a conversation with itself),
    the sender of the mid in a group; None when the reader sent it in a group.
    """
    if found.conv.startswith(PEER_PREFIX):
        return found.conv.removeprefix(PEER_PREFIX)
    return None if found.sender == reader else found.sender


def uids_to_lock(reads: Sequence[ReadAsked], found: Mapping[int, Found]) -> list[str]:
    """The uids whose head rows a batch locks, in uid order (as the inbox's writers take
    them, so that neither can deadlock with the other): each reader of a mid found, and its
    party.

    Args:
        reads: the batch's reads.
        found: the entry of each read (by index) whose mid is in the reader's inbox.
    """
    uids: set[str] = set()
    for index, where in found.items():
        reader = reads[index].uid
        uids.add(reader)
        party = party_of(reader, where)
        if party is not None:
            uids.add(party)
    return sorted(uids)


def plan_reads(
    reads: Sequence[ReadAsked],
    found: Mapping[int, Found],
    markers: Mapping[tuple[str, str], int | None],
    heads: Mapping[str, int],
) -> ReadPlan:
    """Decide a batch of reads.

    Args:
        reads: the batch's reads, in order.
        found: the entry of each read (by index) whose mid is in the reader's inbox; the
            others are answered ``not_found``.
        markers: the ``read_seq`` of each conversation ``(uid, conv)`` of the found reads
            (None: never read), read under the head locks.
        heads: the head of each locked uid; a party without one has no inbox (a backend's
            ``system`` sender) and gets no receipt entry.
    """
    plan = ReadPlan()
    read_seqs = dict(markers)
    new_heads: dict[str, int] = {}
    moves: dict[tuple[str, str], MarkerMove] = {}
    for index, read in enumerate(reads):
        where = found.get(index)
        if where is None:
            plan.replies.append((read, not_found(read)))
            continue
        plan.replies.append((read, frames.Marked(id=read.client_id)))
        key = (read.uid, where.conv)
        current = read_seqs.get(key)
        if current is not None and current >= where.seq:
            continue  # already read there or further on: no receipt
        read_seqs[key] = where.seq
        moves[key] = MarkerMove(read.uid, where.conv, read.mid, where.seq)
        entries: list[ReceiptEntry] = []
        party = party_of(read.uid, where)
        for uid in dict.fromkeys((party, read.uid)):
            if uid is None:
                continue
            head = new_heads.get(uid, heads.get(uid))
            if head is None:
                continue  # no inbox: nothing to number
            new_heads[uid] = head + 1
            plan.receipts.append(ReceiptRow(uid, head + 1, read.uid, read.mid))
            entries.append(ReceiptEntry(uid, head + 1))
        plan.items.append(
            ReceiptItem(
                by=read.uid,
                mid=read.mid,
                origin=ReadingConnection(read.uid, read.gateway_id, read.conn_id),
                entries=entries,
            )
        )
    plan.moves = list(moves.values())
    plan.heads = new_heads
    return plan


def not_found(read: ReadAsked) -> frames.Error:
    return frames.Error(
        code=ErrorCode.NOT_FOUND,
        message="this mid is not in your inbox",
        id=read.client_id,
    )


def reply_deliveries(
    replies: Sequence[tuple[ReadAsked, frames.ServerFrame]], max_bytes: int
) -> list[GatewayDelivery]:
    """The answers to the reading connections: one delivery per gateway (more when too
    large), each answer for its connection only, not durable (a connection gone has nothing
    to be told)."""
    per_gateway: dict[str, list[DeliveryItem]] = {}
    for read, frame in replies:
        per_gateway.setdefault(read.gateway_id, []).append(
            DeliveryItem(
                frame=msgspec.Raw(frames.encode(frame)),
                targets=[Target(read.uid, read.conn_id)],
            )
        )
    return [
        GatewayDelivery(gateway_id, Delivery(items=packed.items), packed.body)
        for gateway_id, items in per_gateway.items()
        for packed in pack_delivery(items, max_bytes)
    ]


_RECEIPTS_OVERHEAD = len(encode_sync(Receipts(items=[])))


def receipts_bodies(items: Sequence[ReceiptItem], max_bytes: int) -> list[bytes]:
    """The ``Receipts`` messages carrying ``items`` in order, each at most ``max_bytes``."""
    sizes = [len(encode_sync(item)) for item in items]
    return [
        encode_sync(Receipts(items=[items[i] for i in run]))
        for run in runs_within(sizes, max_bytes, _RECEIPTS_OVERHEAD)
    ]
