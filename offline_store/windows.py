"""Sync windows (``SWITCHBOARD_HISTORY`` on): a ``SyncRequest`` in, one window of a uid's inbox
out, as one ``Delivery`` to the syncing connection's gateway (``docs/history.md``, section 5).

Seqs of a uid are consecutive, so a window is a range of numbers, ``(since, min(since + limit,
head)]``, read with both bounds on the primary key in one statement that also reads the head
(``sync_tables.py``). The window says how far it reaches (``SyncWindow.to_seq``) and whether
entries follow (``more``): the gateway asks for the next window from its cursor as its client
acknowledges. A window is also cut at a quarter of ``SWITCHBOARD_MAX_AMQP_MESSAGE_BYTES`` (a
thousand frames of 64 KiB would not fit a broker message). A ``since`` above the head gets an
empty last window reaching the head: the inbox is not the one the client knew.

Pure: ``syncs.py`` does the awaiting.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from offline_store.replay import MAX_ROUTING_KEY_BYTES, GatewayDelivery
from proto.envelopes import Delivery, DeliveryItem, SyncWindow, Target
from proto.envelopes import encode as encode_envelope
from proto.errors import BadEnvelope
from proto.frames import Receipt, encode
from proto.items import DECODE_ERRORS, reason_of
from proto.packing import pack_delivery
from proto.sync import SyncRequest, decode_sync_request

MS_PER_DAY = 86_400_000
MID_TIME_DIGITS = 12
"""A mid begins with 12 hex digits of Unix milliseconds (``proto/mids.py``)."""


@dataclass(frozen=True, slots=True)
class WindowRow:
    """One entry of a uid's inbox as the window's statement read it."""

    seq: int
    mid: str
    frame: str | None
    """A message's frame (without ``seq``); None for a receipt entry."""
    reader: str | None = None
    """A receipt entry's reader (``frame`` is None)."""


@dataclass(frozen=True, slots=True)
class Window:
    """What one sync window holds."""

    rows: list[WindowRow]
    to_seq: int
    more: bool


def sync_request_from_body(body: bytes) -> SyncRequest:
    """Decode a ``SyncRequest`` body.

    Raises:
        BadEnvelope: the body is not a ``SyncRequest``, or it names a gateway that no routing
            key can reach.
    """
    try:
        request = decode_sync_request(body)
    except DECODE_ERRORS as exc:
        raise BadEnvelope(reason_of(exc)) from None
    if len(request.gateway_id.encode()) > MAX_ROUTING_KEY_BYTES:
        raise BadEnvelope("$.gateway_id is longer than a routing key")
    return request


def window_size(request_limit: int, page: int) -> int:
    """How many seqs one window spans: what the request asks for, never more than a page."""
    if request_limit <= 0:
        return page
    return min(request_limit, page)


def upper_bound(since: int, size: int) -> int:
    """The highest ``seq`` the statement reads for a window of ``size`` after ``since``."""
    return since + size


def cutoff_mid(now_ms: int, history_days: float) -> str:
    """The smallest mid still within retention ("" when everything is kept): entries of older
    mids are not read, whether or not the sweep deleted them yet."""
    if history_days <= 0:
        return ""
    cutoff_ms = max(0, now_ms - int(history_days * MS_PER_DAY))
    return f"{cutoff_ms:0{MID_TIME_DIGITS}x}"


def window_of(
    rows: Sequence[WindowRow], since: int, size: int, head: int, max_bytes: int
) -> Window:
    """The window the statement's rows make.

    Args:
        rows: the entries read in ``(since, since + size]``, in ``seq`` order.
        since: where the window starts (exclusive).
        size: ``window_size``.
        head: the uid's head, read in the same snapshot (0: no inbox yet).
        max_bytes: the most frame bytes one window carries; the window is cut before the
            entry that would pass it (never before its first).

    Returns:
        The rows to send, how far the window reaches and whether entries follow.
    """
    if since >= head:
        return Window([], head, False)
    to_seq = min(since + size, head)
    kept: list[WindowRow] = []
    total = 0
    for row in rows:
        if row.seq > to_seq:
            break
        total += len(row.frame or "") + 64
        if kept and total > max_bytes:
            return Window(kept, kept[-1].seq, True)
        kept.append(row)
    return Window(kept, to_seq, to_seq < head)


def window_deliveries(
    request: SyncRequest, window: Window, max_bytes: int
) -> list[GatewayDelivery]:
    """The window as the ``Delivery`` messages for the connection's gateway: each entry an
    item for the connection with its ``seq`` (receipts as ``receipt`` frames, without a mid:
    nothing to acknowledge), and ``sync`` saying how far the window reaches."""
    items = [
        DeliveryItem(
            frame=msgspec.Raw(row.frame.encode())
            if row.frame is not None
            else msgspec.Raw(encode(Receipt(by=row.reader or "", mid=row.mid))),
            targets=[Target(request.uid, request.conn_id, row.seq)],
            mid=row.mid if row.frame is not None else "",
        )
        for row in window.rows
    ]
    sync = SyncWindow(to_seq=window.to_seq, more=window.more, conn_id=request.conn_id)
    packed = pack_delivery(items, max_bytes, sync=sync)
    if not packed:  # an empty window still says how far it reaches
        empty = Delivery(items=[], sync=sync)
        return [GatewayDelivery(request.gateway_id, empty, encode_envelope(empty))]
    return [
        GatewayDelivery(
            request.gateway_id,
            Delivery(items=part.items, sync=part.sync),
            part.body,
        )
        for part in packed
    ]
