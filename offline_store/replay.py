"""What the offline store decides: envelopes in, rows and envelopes out.

Turns a ``Delivery`` body into the rows to keep, inserted rows into a ``Saved`` envelope, acks
into the keys to delete, and a page of stored rows into one ``Delivery`` per gateway. Nothing
here awaits, touches PostgreSQL or RabbitMQ, or reads a clock: ``store.py`` and ``bus.py`` do the
I/O, ``consumers.py`` does the awaiting.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgspec

from proto import frames
from proto.codes import ErrorCode
from proto.envelopes import (
    Acked,
    Delivery,
    DeliveryItem,
    MessageOffline,
    MessageRefused,
    Origin,
    ReplayRequest,
    Saved,
    SavedUid,
    Target,
    decode_acked,
    decode_batch,
    decode_replay_request,
    encode,
)
from proto.errors import BadEnvelope
from proto.items import (
    DECODE_ERRORS,
    RefusedItem,
    decode_delivery_items,
    reason_of,
    wrap_items,
)
from proto.names import KEY_ACK
from proto.packing import DEFAULT_MAX_AMQP_MESSAGE_BYTES, pack_delivery

MAX_ROUTING_KEY_BYTES = 255
"""AMQP 0-9-1 routing keys are short strings; a longer gateway_id could never be published to."""
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


@dataclass(frozen=True, slots=True)
class RowKey:
    """The primary key of a row."""

    uid: str
    mid: str


@dataclass(frozen=True, slots=True)
class GatewayTargets:
    """The connections of one replay request that live on one gateway."""

    gateway_id: str
    targets: tuple[Target, ...]


@dataclass(frozen=True, slots=True)
class GatewayDelivery:
    """A delivery to publish on the deliveries exchange with ``gateway_id`` as routing key."""

    gateway_id: str
    delivery: Delivery
    body: bytes
    """``delivery`` encoded: the AMQP body, within the message size limit."""


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
        problem = problem or _storable_problem(item.mid, "$.mid")
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
            problem = _storable_problem(target.uid, "$.targets[].uid")
            if problem is not None:
                unstorable.append(target)
                reason = problem
                continue
            rows.append(UndeliveredRow(target.uid, item.mid, frame, item.origin))
        if unstorable:
            refused.append(_refused(item, unstorable, reason, position))
    return KeptRows(rows, refused)


def refused_row(row: UndeliveredRow, reason: str, index: int) -> RefusedItem:
    """A row PostgreSQL refused, as an item alone in a ``Delivery``, to be dead-lettered."""
    item = DeliveryItem(
        frame=msgspec.Raw(row.frame.encode()),
        targets=[Target(row.uid, "")],
        mid=row.mid,
        durable=True,
    )
    return RefusedItem(encode(Delivery(items=[item])), reason, index)


def _refused(
    item: DeliveryItem, targets: list[Target], reason: str, position: int
) -> RefusedItem:
    """The item (for these targets only) alone in a ``Delivery``, to be dead-lettered."""
    alone = msgspec.structs.replace(item, targets=targets)
    return RefusedItem(encode(Delivery(items=[alone])), reason, position)


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


def saved_envelope(keys: Iterable[RowKey]) -> Saved | None:
    """Return the ``Saved`` envelope for new rows: each uid with its smallest new mid.

    Args:
        keys: the keys of the rows that were committed (duplicates allowed).

    Returns:
        ``Saved`` with uids in sorted order, or None when there is nothing to announce.
    """
    first_mids: dict[str, str] = {}
    for key in keys:
        known = first_mids.get(key.uid)
        if known is None or key.mid < known:
            first_mids[key.uid] = key.mid
    if not first_mids:
        return None
    return Saved(uids=[SavedUid(uid, first_mids[uid]) for uid in sorted(first_mids)])


def offline_events(keys: Iterable[RowKey], ts_ms: int) -> list[MessageOffline]:
    """One ``message.offline`` event per new row, for backends that notify offline users.

    Args:
        keys: the keys of the rows that were committed (duplicates dropped here).
        ts_ms: when they were stored, Unix milliseconds.
    """
    unique = dict.fromkeys((key.uid, key.mid) for key in keys)
    return [MessageOffline(uid=uid, mid=mid, ts=ts_ms) for uid, mid in unique]


def refusals(
    rows: Sequence[UndeliveredRow],
    ts_ms: int,
    max_bytes: int = DEFAULT_MAX_AMQP_MESSAGE_BYTES,
) -> tuple[list[GatewayDelivery], list[MessageRefused]]:
    """What the store says about rows it refused because their uid's store is full.

    Each sending connection gets one ``error`` frame (``recipient_full``) per refused row, with
    its ``send``'s id, the mid and the recipient; every refused row also makes a
    ``message.refused`` event for backends (a backend's own ``api.send`` has no connection).

    Args:
        rows: the refused rows, as they came (their origin, when known, says who sent them).
        ts_ms: when they were refused, Unix milliseconds.
        max_bytes: the most bytes of one message (``SWITCHBOARD_MAX_AMQP_MESSAGE_BYTES``).

    Returns:
        One ``Delivery`` per gateway of a sending connection, and the events.
    """
    per_gateway: dict[str, list[DeliveryItem]] = {}
    events: list[MessageRefused] = []
    for row in rows:
        origin = row.origin
        events.append(
            MessageRefused(
                uid=row.uid,
                mid=row.mid,
                code=ErrorCode.RECIPIENT_FULL,
                ts=ts_ms,
                sender=origin.uid if origin else "",
                client_id=origin.client_id if origin else "",
            )
        )
        if origin is None or not (origin.gateway_id and origin.conn_id):
            continue  # a backend's message: the event alone tells
        if len(origin.gateway_id.encode()) > MAX_ROUTING_KEY_BYTES:
            continue
        error = frames.Error(
            code=ErrorCode.RECIPIENT_FULL,
            message="the recipient's offline store is full: the message was not kept",
            id=origin.client_id or None,
            mid=row.mid,
            to=row.uid,
        )
        per_gateway.setdefault(origin.gateway_id, []).append(
            DeliveryItem(
                frame=msgspec.Raw(frames.encode(error)),
                targets=[Target(origin.uid, origin.conn_id)],
            )
        )
    deliveries = [
        GatewayDelivery(gateway_id, Delivery(items=packed.items), packed.body)
        for gateway_id, items in per_gateway.items()
        for packed in pack_delivery(items, max_bytes)
    ]
    return deliveries, events


def acked_from_body(body: bytes) -> Acked:
    """Decode an ``Acked`` body.

    Raises:
        BadEnvelope: the body is not an ``Acked``, or a value could never match a row.
    """
    try:
        acked = decode_acked(body)
    except DECODE_ERRORS as exc:
        raise BadEnvelope(reason_of(exc)) from None
    _require_storable(acked.uid, "$.uid")
    for mid in acked.mids:
        _require_storable(mid, "$.mids[]")
    return acked


def acks_from_batch_body(body: bytes) -> tuple[list[Acked], list[RefusedItem]]:
    """Decode a ``gateway.acks`` body: a ``Batch`` of ``gateway.ack`` envelopes.

    Each item is decoded on its own: a bad one is refused alone (to be dead-lettered with its
    reason), the others kept.

    Returns:
        The acks, and the refused items (each alone in a ``Batch``).

    Raises:
        BadEnvelope: the body is not a ``Batch`` at all.
    """
    try:
        batch = decode_batch(body)
    except DECODE_ERRORS as exc:
        raise BadEnvelope(reason_of(exc)) from None
    acks: list[Acked] = []
    refused: list[RefusedItem] = []
    for index, item in enumerate(batch.items):
        try:
            if item.key != KEY_ACK:
                raise BadEnvelope("$.items[] has a routing key other than gateway.ack")
            acks.append(acked_from_body(bytes(item.body)))
        except BadEnvelope as exc:
            refused.append(RefusedItem(wrap_items([encode(item)]), exc.reason, index))
    return acks, refused


def chunks(
    uids: Sequence[str], mids: Sequence[str], size: int
) -> list[tuple[Sequence[str], Sequence[str]]]:
    """Split parallel key lists into pieces of at most ``size`` keys (one statement each)."""
    return [
        (uids[start : start + size], mids[start : start + size])
        for start in range(0, len(uids), size)
    ]


def acked_keys(acks: Iterable[Acked]) -> tuple[list[str], list[str]]:
    """Flatten acks into two parallel lists (uids, mids), one entry per distinct row key."""
    uids: list[str] = []
    mids: list[str] = []
    seen: set[tuple[str, str]] = set()
    for acked in acks:
        for mid in acked.mids:
            if (acked.uid, mid) not in seen:
                seen.add((acked.uid, mid))
                uids.append(acked.uid)
                mids.append(mid)
    return uids, mids


def replay_request_from_body(body: bytes) -> ReplayRequest:
    """Decode a ``ReplayRequest`` body.

    Raises:
        BadEnvelope: the body is not a ``ReplayRequest``, or it names a gateway that no routing
            key can reach.
    """
    try:
        request = decode_replay_request(body)
    except DECODE_ERRORS as exc:
        raise BadEnvelope(reason_of(exc)) from None
    _require_storable(request.uid, "$.uid")
    _require_storable(request.from_mid, "$.from_mid")
    for target in request.targets:
        if len(target.gateway_id.encode()) > MAX_ROUTING_KEY_BYTES:
            raise BadEnvelope("$.targets[].gateway_id is longer than a routing key")
    return request


def targets_by_gateway(request: ReplayRequest) -> tuple[GatewayTargets, ...]:
    """Group the request's connections by gateway, in first-seen order, without duplicates."""
    grouped: dict[str, list[Target]] = {}
    for replay_target in request.targets:
        targets = grouped.setdefault(replay_target.gateway_id, [])
        target = Target(request.uid, replay_target.conn_id)
        if target not in targets:
            targets.append(target)
    return tuple(GatewayTargets(gid, tuple(ts)) for gid, ts in grouped.items())


def window_rows(request_limit: int, page: int) -> int:
    """How many rows one replay request gets: what it asks for, never more than a page.

    Args:
        request_limit: ``ReplayRequest.limit`` (0: no limit of its own).
        page: the store's ``SWITCHBOARD_REPLAY_PAGE``.
    """
    if request_limit <= 0:
        return page
    return min(request_limit, page)


def split_window(
    rows: Sequence[StoredRow], limit: int
) -> tuple[Sequence[StoredRow], str]:
    """Split rows read with ``limit + 1`` into the window and the mid the next one starts at.

    Returns:
        The first ``limit`` rows, and the mid of the row after them ("" when there is none).
    """
    if len(rows) <= limit:
        return rows, ""
    return rows[:limit], rows[limit].mid


def replay_deliveries(
    rows: Sequence[StoredRow],
    gateways: Sequence[GatewayTargets],
    next_mid: str = "",
    max_bytes: int = DEFAULT_MAX_AMQP_MESSAGE_BYTES,
    from_mid: str = "",
) -> list[GatewayDelivery]:
    """Return the deliveries carrying every row of a window to each gateway, in the rows' order.

    One ``Delivery`` per gateway, or more when a window is larger than ``max_bytes`` (500 rows
    of 64 KiB frames are 32 MiB, more than a broker takes in one message). Each item is flagged
    ``stored``: its row stays until the client acknowledges it, so a gateway that cannot deliver
    it does not hand it back. The frame is the stored text, byte for byte.

    Args:
        rows: one window of the uid's rows, sorted by mid.
        gateways: the request's connections grouped by gateway (``targets_by_gateway``).
        next_mid: where the rows not in this window start ("" when there are none); each
            gateway's last message of the window carries it, and the gateway asks for them as
            its clients acknowledge.
        max_bytes: the most bytes of one message (``SWITCHBOARD_MAX_AMQP_MESSAGE_BYTES``).
        from_mid: the request's ``from_mid``: the window holds every row from there on, and the
            gateway pushes it only when it knows of no earlier row still to push.
    """
    if not rows:
        return []
    frames = [(row.mid, msgspec.Raw(row.frame.encode())) for row in rows]
    return [
        GatewayDelivery(
            gateway.gateway_id,
            Delivery(
                items=packed.items, next_mid=packed.next_mid, from_mid=packed.from_mid
            ),
            packed.body,
        )
        for gateway in gateways
        for packed in pack_delivery(
            [
                DeliveryItem(
                    frame=frame,
                    targets=list(gateway.targets),
                    mid=mid,
                    durable=True,
                    stored=True,
                )
                for mid, frame in frames
            ],
            max_bytes,
            next_mid,
            from_mid,
        )
    ]


def _frame_text(item: DeliveryItem) -> tuple[str | None, str | None]:
    """The item's frame as text, or None and why it cannot be stored."""
    try:
        frame = bytes(item.frame).decode()
    except UnicodeDecodeError:
        return None, "$.frame is not UTF-8"
    if "\x00" in frame:
        return None, "$.frame contains a NUL character"
    return frame, None


def _storable_problem(value: str, path: str) -> str | None:
    """Why PostgreSQL could not keep ``value`` as a key, or None."""
    # text cannot hold NUL: one such value would fail the whole batch's insert forever.
    if "\x00" in value:
        return f"{path} contains a NUL character"
    if len(value.encode()) > MAX_KEY_BYTES:
        return f"{path} is longer than {MAX_KEY_BYTES} bytes"
    return None


def _require_storable(value: str, path: str) -> None:
    problem = _storable_problem(value, path)
    if problem is not None:
        raise BadEnvelope(problem)
