"""Replay windows: a ``ReplayRequest`` in, one window of a uid's rows out, as one ``Delivery``
per gateway.

A window holds at most ``SWITCHBOARD_REPLAY_PAGE`` rows, and at most what the request asks for;
the last message of a window that does not hold every row says where the rest starts
(``next_mid``), and the gateway asks for it as its client acknowledges. Pure: ``consumers.py``
does the awaiting, ``store.py`` reads the rows.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from offline_store.rows import StoredRow, require_storable
from proto.envelopes import (
    Delivery,
    DeliveryItem,
    ReplayRequest,
    Target,
    decode_replay_request,
)
from proto.errors import BadEnvelope
from proto.frames import with_seq
from proto.items import DECODE_ERRORS, RefusedItem, batch_of, reason_of
from proto.names import KEY_REPLAY
from proto.packing import DEFAULT_MAX_AMQP_MESSAGE_BYTES, pack_delivery

MAX_ROUTING_KEY_BYTES = 255
"""AMQP 0-9-1 routing keys are short strings; a longer gateway_id could never be published to."""
MAX_ROWS_PER_READ = 25_000
"""Most rows one statement of a replay batch reads (``read_pieces``): 50 windows of the
default page, or thousands of logins with a few rows each."""


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
    require_storable(request.uid, "$.uid")
    require_storable(request.from_mid, "$.from_mid")
    for target in request.targets:
        if len(target.gateway_id.encode()) > MAX_ROUTING_KEY_BYTES:
            raise BadEnvelope("$.targets[].gateway_id is longer than a routing key")
    return request


def replay_requests_from_batch_body(
    body: bytes,
) -> tuple[list[ReplayRequest], list[RefusedItem]]:
    """Decode a ``router.replays`` body: a ``Batch`` of ``router.replay`` envelopes, each
    decoded on its own (a bad one is refused alone, to be dead-lettered with its reason).

    Raises:
        BadEnvelope: the body is not a ``Batch`` at all.
    """
    return batch_of(body, KEY_REPLAY, replay_request_from_body)


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


def read_pieces(limits: Sequence[int], max_rows: int) -> list[range]:
    """Cut a batch's requests, in order, into pieces each read with one statement.

    ``limits``: the rows each request reads (0: nothing to read). A piece's limits add up to at
    most ``max_rows``, or it holds one request alone; what is read and not yet published stays
    bounded by it.
    """
    pieces: list[range] = []
    start, rows = 0, 0
    for index, limit in enumerate(limits):
        if rows and rows + limit > max_rows:
            pieces.append(range(start, index))
            start, rows = index, 0
        rows += limit
    if start < len(limits):
        pieces.append(range(start, len(limits)))
    return pieces


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
    it does not hand it back. The frame is the stored text, byte for byte, with a thin row's
    ``seq`` written first (history on).

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
    frames = [
        (
            row.mid,
            msgspec.Raw(
                row.frame.encode()
                if row.seq is None
                else with_seq(row.frame.encode(), row.seq)
            ),
        )
        for row in rows
    ]
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


def merge_whole_windows(
    windows: Sequence[Sequence[GatewayDelivery]], max_bytes: int
) -> list[GatewayDelivery]:
    """Whole windows of several uids in as few messages per gateway as fit in ``max_bytes``.

    A whole window holds every stored row of its uid from the first (``from_mid`` "", no
    ``next_mid``) in one message per gateway: the usual login's replay. A gateway admits such a
    window's rows connection by connection (``gateway/admission.py``), whatever else the
    ``Delivery`` holds, so windows of many uids can share one: a reconnect storm's thousands of
    replays are tens of broker messages, not one each. Each window stays whole in one message
    (a connection cut short in a window must not get its later rows from the next message),
    and each gateway's rows keep their order.

    Args:
        windows: each window's deliveries (``replay_deliveries``), at most one per gateway.
        max_bytes: the most bytes of one message (``SWITCHBOARD_MAX_AMQP_MESSAGE_BYTES``).
    """
    merged: list[GatewayDelivery] = []
    items: dict[str, list[DeliveryItem]] = {}
    sizes: dict[str, int] = {}

    def flush(gateway_id: str) -> None:
        # The bodies' sizes add up to more than the merged body's: it fits in one message.
        (packed,) = pack_delivery(items.pop(gateway_id), max_bytes)
        sizes.pop(gateway_id)
        merged.append(
            GatewayDelivery(gateway_id, Delivery(items=packed.items), packed.body)
        )

    for window in windows:
        for outbound in window:
            gateway_id = outbound.gateway_id
            if (
                gateway_id in items
                and sizes[gateway_id] + len(outbound.body) > max_bytes
            ):
                flush(gateway_id)
            items.setdefault(gateway_id, []).extend(outbound.delivery.items)
            sizes[gateway_id] = sizes.get(gateway_id, 0) + len(outbound.body)
    for gateway_id in list(items):
        flush(gateway_id)
    return merged
