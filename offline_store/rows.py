"""What the offline store keeps: a ``Delivery`` body in, the rows to insert out.

Only durable items become rows, one per distinct target uid, and only values PostgreSQL can
keep: an item or a target that holds another is refused alone, to be dead-lettered, and the
others are kept. Pure: ``consumers.py`` does the awaiting, ``store.py`` the SQL.
"""

from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from proto.envelopes import Delivery, DeliveryItem, Origin, Target, encode
from proto.errors import BadEnvelope
from proto.items import RefusedItem, decode_delivery_items

MAX_KEY_BYTES = 1024
"""The most bytes of a uid or a mid kept: the two together must fit in a row of the primary
key's B-tree index (about 2.7 kB), or the whole batch's insert would fail at every retry."""


@dataclass(frozen=True, slots=True)
class UndeliveredRow:
    """One row of the undelivered table: a frame waiting for one uid."""

    uid: str
    mid: str
    frame: str
    origin: Origin | None = None
    """The sending connection, told if the row is refused (``recipient_full``)."""


@dataclass(frozen=True, slots=True)
class StoredRow:
    """One row read back for a replay; the uid is the request's."""

    mid: str
    frame: str
    seq: int | None = None
    """A thin row's place in the uid's inbox (history on), written into the frame at replay;
    None when the frame is the row's own (it has its ``seq`` already, if any)."""


@dataclass(frozen=True, slots=True)
class RowKey:
    """The primary key of a row."""

    uid: str
    mid: str


@dataclass(frozen=True, slots=True)
class KeptRows:
    """What a ``Delivery`` asks the store to keep, and its items that cannot be kept."""

    rows: list[UndeliveredRow]
    refused: list[RefusedItem]
    """Each to be dead-lettered alone; the rows of the other items are kept all the same."""


def rows_from_body(body: bytes) -> KeptRows:
    """Decode a ``Delivery`` body and return the rows it asks the store to keep.

    Only durable items that were not replayed from the store become rows, one per distinct
    target uid. Frames that are not messages (``ready``, ``kicked``) and room messages are not
    durable; a ``stored`` item already has its row; an item without a mid could never be
    acknowledged, so it is not kept either. Each item is checked on its own: one that does not
    decode, or holds a value PostgreSQL could never store, is refused alone (a target uid
    alone, when only that uid is bad), and the others are kept.

    Args:
        body: the AMQP body, JSON of a ``proto.envelopes.Delivery``.

    Returns:
        The rows, in the order of the items and of their targets, and the refused items.

    Raises:
        BadEnvelope: the body is not even an object with an ``items`` array.
    """
    decoded = decode_delivery_items(body)
    rows: list[UndeliveredRow] = []
    refused = list(decoded.refused)
    for index, item in enumerate(decoded.items):
        if not item.durable or item.stored or not item.mid:
            continue
        position = decoded.position(index)
        frame, problem = _frame_text(item)
        problem = problem or storable_problem(item.mid, "$.mid")
        if frame is None or problem is not None:
            refused.append(_refused(item, item.targets, problem or "", position))
            continue
        seen: set[str] = set()
        unstorable: list[Target] = []
        reason = ""
        for target in item.targets:
            if target.uid in seen:
                continue
            seen.add(target.uid)
            problem = storable_problem(target.uid, "$.targets[].uid")
            if problem is not None:
                unstorable.append(target)
                reason = problem
                continue
            # A numbered copy (history on) is kept with its seq written in, as the gateway
            # would have pushed it: its replay carries it.
            kept = frame if target.seq is None else with_seq_text(frame, target.seq)
            rows.append(UndeliveredRow(target.uid, item.mid, kept, item.origin))
        if unstorable:
            refused.append(_refused(item, unstorable, reason, position))
    return KeptRows(rows, refused)


def with_seq_text(frame: str, seq: int) -> str:
    """A frame kept as text, with ``seq`` written first (``proto.frames.with_seq``)."""
    return f'{{"seq":{seq},{frame[1:]}'


def refused_row(row: UndeliveredRow, reason: str, index: int) -> RefusedItem:
    """A row PostgreSQL refused, as an item alone in a ``Delivery``, to be dead-lettered."""
    item = DeliveryItem(
        frame=msgspec.Raw(row.frame.encode()),
        targets=[Target(row.uid, "")],
        mid=row.mid,
        durable=True,
    )
    return RefusedItem(encode(Delivery(items=[item])), reason, index)


def unique_rows(rows: Iterable[UndeliveredRow]) -> list[UndeliveredRow]:
    """Drop rows whose (uid, mid) came before in ``rows``; the first copy of a frame wins."""
    seen: set[tuple[str, str]] = set()
    unique: list[UndeliveredRow] = []
    for row in rows:
        key = (row.uid, row.mid)
        if key not in seen:
            seen.add(key)
            unique.append(row)
    return unique


def storable_problem(value: str, path: str) -> str | None:
    """Why PostgreSQL could not keep ``value`` as a key, or None."""
    # text cannot hold NUL: one such value would fail the whole batch's insert forever.
    if "\x00" in value:
        return f"{path} contains a NUL character"
    # At most 4 bytes a character: most values need no encoding to tell.
    if len(value) * 4 > MAX_KEY_BYTES and len(value.encode()) > MAX_KEY_BYTES:
        return f"{path} is longer than {MAX_KEY_BYTES} bytes"
    return None


def require_storable(value: str, path: str) -> None:
    """Raise ``BadEnvelope`` when PostgreSQL could not keep ``value`` as a key."""
    problem = storable_problem(value, path)
    if problem is not None:
        raise BadEnvelope(problem)


def _refused(
    item: DeliveryItem, targets: list[Target], reason: str, position: int
) -> RefusedItem:
    """The item (for these targets only) alone in a ``Delivery``, to be dead-lettered."""
    alone = msgspec.structs.replace(item, targets=targets)
    return RefusedItem(encode(Delivery(items=[alone])), reason, position)


def _frame_text(item: DeliveryItem) -> tuple[str | None, str | None]:
    """The item's frame as text, or None and why it cannot be stored."""
    try:
        frame = bytes(item.frame).decode()
    except UnicodeDecodeError:
        return None, "$.frame is not UTF-8"
    if "\x00" in frame:
        return None, "$.frame contains a NUL character"
    return frame, None
