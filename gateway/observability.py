"""What the gateway counts: its metrics, in the process's registry (``runtime/metrics.py``).

Their names come from ``proto/metrics.py``; ``runtime/health.py`` serves them on /metrics with
/livez and /readyz. The sockets and the hub call the ``count_*`` functions where things happen;
this module decides nothing about connections or deliveries.
"""

import time
import typing
from collections.abc import Iterable, Sized

from prometheus_client import Counter, Gauge, Histogram

from proto import envelopes, frames, metrics
from proto.codes import CloseCode, ErrorCode
from proto.mids import MID_PATTERN, mid_time_ms
from proto.names import GATEWAY_TO_ROUTER_KEYS, KEY_ACK, KEY_ACK_BATCH, KEY_BATCH
from runtime.metrics import ERRORS, HOP_BUCKETS_S, REGISTRY

LATENCY_BUCKETS_S = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
SERVER_FRAME_TYPES = frozenset(
    cls.__struct_config__.tag for cls in typing.get_args(frames.AnyServerFrame)
)
ERROR_CODES = frozenset(
    (*(code.value for code in ErrorCode), metrics.CODE_ENVELOPE_REJECTED)
)
OTHER_CODE = "other"

CONNECTIONS = Gauge(
    metrics.GATEWAY_CONNECTIONS, "Open WebSocket connections.", registry=REGISTRY
)
FRAMES_RECEIVED = Counter(
    metrics.FRAMES_RECEIVED_TOTAL,
    "Frames received from clients, by type.",
    [metrics.LABEL_FRAME_TYPE],
    registry=REGISTRY,
)
FRAMES_SENT = Counter(
    metrics.FRAMES_SENT_TOTAL,
    "Frames written to clients, by type.",
    [metrics.LABEL_FRAME_TYPE],
    registry=REGISTRY,
)
DELIVERIES = Counter(
    metrics.DELIVERIES_TOTAL,
    "Deliveries consumed from this gateway's queue.",
    registry=REGISTRY,
)
DELIVERY_LATENCY = Histogram(
    metrics.DELIVERY_LATENCY_SECONDS,
    "Time from a message's ts to its push to the recipient's connection (live messages).",
    buckets=LATENCY_BUCKETS_S,
    registry=REGISTRY,
)
BATCH_WAIT = Histogram(
    metrics.GATEWAY_BATCH_WAIT_SECONDS,
    "Time an envelope for the routers waits for its Batch's publish (the Batch before it "
    "waits for its confirm).",
    buckets=HOP_BUCKETS_S,
    registry=REGISTRY,
)
PUSH = Histogram(
    metrics.GATEWAY_PUSH_SECONDS,
    "Time from a delivery's consume to each of its frames' write to a client's socket.",
    buckets=HOP_BUCKETS_S,
    registry=REGISTRY,
)
CLIENT_ACK = Histogram(
    metrics.GATEWAY_CLIENT_ACK_SECONDS,
    "Time from a live message's push to its client's ack.",
    buckets=HOP_BUCKETS_S,
    registry=REGISTRY,
)
DELIVERY_ACKS = Counter(
    metrics.GATEWAY_DELIVERY_ACKS_TOTAL,
    "Acks sent to the broker for this gateway's deliveries; multiple: one for a run of them.",
    [metrics.LABEL_MULTIPLE],
    registry=REGISTRY,
)
PUBLISHES = Counter(
    metrics.GATEWAY_PUBLISHES_TOTAL,
    "Messages published to the inbound exchange, by routing key.",
    [metrics.LABEL_ROUTING_KEY],
    registry=REGISTRY,
)
UNACKED_CAPPED = Counter(
    metrics.UNACKED_CAPPED_TOTAL,
    "Live messages handed to the offline store: their connection held too many unacknowledged.",
    registry=REGISTRY,
)
PRESSURE_HANDOVERS = Counter(
    metrics.PRESSURE_HANDOVERS_TOTAL,
    "Unacknowledged copies handed to the offline store: pinned deliveries neared the prefetch.",
    registry=REGISTRY,
)
CLOSES = Counter(
    metrics.CLOSES_TOTAL,
    "WebSocket closes this gateway started, by close code.",
    [metrics.LABEL_CODE],
    registry=REGISTRY,
)
HEARTBEATS = Counter(
    metrics.HEARTBEATS_TOTAL,
    "Heartbeats published to the routers and confirmed by the broker.",
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    metrics.RATE_LIMITED_TOTAL,
    "Frames answered rate_limited, by the limit that refused them.",
    [metrics.LABEL_LIMIT],
    registry=REGISTRY,
)
# Every label value is exported from the start, at 0, so that rates and absent() work at once.
# The per-frame counters are looked up once here: ``labels()`` costs more than ``inc()``.
_RECEIVED_BY_TYPE = {
    frame_type: FRAMES_RECEIVED.labels(frame_type)
    for frame_type in (*frames.CLIENT_FRAME_TYPES, metrics.FRAME_TYPE_BINARY)
}
_SENT_BY_TYPE = {
    frame_type: FRAMES_SENT.labels(frame_type) for frame_type in SERVER_FRAME_TYPES
}
for _code in ERROR_CODES:
    ERRORS.labels(_code)
_RATE_LIMITED_BY_LIMIT = {
    limit: RATE_LIMITED.labels(limit) for limit in metrics.RATE_LIMITS
}
_CLOSES_BY_CODE = {int(code): CLOSES.labels(str(int(code))) for code in CloseCode}


class SentClose(typing.Protocol):
    code: int


class ClosingProtocol(typing.Protocol):
    """What ``count_close`` reads of a connection's websockets protocol state."""

    @property
    def close_sent(self) -> SentClose | None: ...

    @property
    def close_rcvd_then_sent(self) -> bool | None: ...


_TYPE_KEY = b'"type":"'
_SEQ_PREFIX = b'{"seq":'


def frame_type_of(frame: bytes) -> str:
    """The ``type`` of a frame Switchboard encoded, read from its first bytes.

    msgspec writes a tagged struct's tag first, so every frame a gateway pushes (encoded by a
    gateway, a router or the offline store, and stored byte for byte) starts with its type:
    no JSON decoding per push. A numbered copy has its ``seq`` first, then the type.
    """
    start = 1  # after the opening brace
    if frame.startswith(_SEQ_PREFIX):
        start = frame.find(b",") + 1
    elif not frame.startswith(b"{"):
        return metrics.FRAME_TYPE_UNKNOWN
    if frame.startswith(_TYPE_KEY, start):
        begin = start + len(_TYPE_KEY)
        end = frame.find(b'"', begin)
        kind = frame[begin:end].decode("ascii", "replace")
        if kind in SERVER_FRAME_TYPES:
            return kind
    return metrics.FRAME_TYPE_UNKNOWN


def count_frame_received(frame_type: str) -> None:
    """Count a client frame by the type its session decoded (``unknown``, ``binary`` included)."""
    counter = _RECEIVED_BY_TYPE.get(frame_type)
    if counter is None:  # a type outside the list above: counted all the same
        counter = FRAMES_RECEIVED.labels(frame_type)
    counter.inc()


def count_frame_sent(frame: bytes) -> None:
    """Count a frame written to a client, by type."""
    kind = frame_type_of(frame)
    counter = _SENT_BY_TYPE.get(kind)
    if counter is None:
        counter = FRAMES_SENT.labels(kind)
    counter.inc()


_PUBLISHED_KEYS = (
    *GATEWAY_TO_ROUTER_KEYS,
    KEY_BATCH,
    KEY_ACK,
    KEY_ACK_BATCH,
)
_PUBLISHES_BY_KEY = {key: PUBLISHES.labels(key) for key in _PUBLISHED_KEYS}
_DELIVERY_ACKS = {
    multiple: DELIVERY_ACKS.labels(str(multiple).lower()) for multiple in (True, False)
}
"""Labelled at import, so that both series exist from the start."""


def count_delivery_ack(multiple: bool) -> None:
    _DELIVERY_ACKS[multiple].inc()


def count_pushed(frame: bytes, consumed_at: float) -> None:
    """Count a frame of a delivery written to a client, and the time since its delivery was
    consumed (``consumed_at``, ``time.monotonic()``)."""
    PUSH.observe(time.monotonic() - consumed_at)
    count_frame_sent(frame)


def count_client_acks(waits_s: Iterable[float]) -> None:
    """Observe how long each live message a client acknowledged waited for its ack."""
    for wait_s in waits_s:
        CLIENT_ACK.observe(wait_s)


def count_publish(routing_key: str) -> None:
    """Count one message published to the broker (a ``Batch`` counts once)."""
    counter = _PUBLISHES_BY_KEY.get(routing_key)
    if counter is None:
        counter = PUBLISHES.labels(OTHER_CODE)
    counter.inc()


def count_error(code: str) -> None:
    """Count an error frame this gateway answered, by code."""
    ERRORS.labels(code if code in ERROR_CODES else OTHER_CODE).inc()


def count_close(protocol: ClosingProtocol) -> None:
    """Count a closed connection by the close code the gateway sent, if it started the close
    (an echo of a client's close is not counted)."""
    sent = protocol.close_sent
    if sent is None or protocol.close_rcvd_then_sent:
        return
    counter = _CLOSES_BY_CODE.get(sent.code)
    if counter is None:
        counter = CLOSES.labels(OTHER_CODE)
    counter.inc()


def count_heartbeat() -> None:
    """Count a heartbeat the broker confirmed."""
    HEARTBEATS.inc()


def count_rate_limited(limit: str) -> None:
    """Count a frame answered ``rate_limited``, by the limit that refused it."""
    counter = _RATE_LIMITED_BY_LIMIT.get(limit)
    if counter is None:
        counter = RATE_LIMITED.labels(limit)
    counter.inc()


def count_delivery(delivery: envelopes.Delivery, now_ms: int) -> None:
    """Count a delivery from the gateway's queue, and the latency of each live message in it.

    The latency runs from the mid's time (when a gateway or router accepted the message) to
    now, just before the push. Replayed messages (``stored``) are left out: their age is their
    wait in the offline store, not a delivery time. So are the entries of a sync window (history
    on), for the same reason, and ``advance`` items: the sender's own message, which is not
    pushed; observed, each message would count twice.
    """
    DELIVERIES.inc()
    if delivery.sync is not None:
        return  # a window of up to a page of old entries: no time to observe, nor to spend
    for item in delivery.items:
        # A mid made by another producer may not carry a time: it is not observed.
        if not item.stored and not item.advance and MID_PATTERN.fullmatch(item.mid):
            DELIVERY_LATENCY.observe(max(0.0, (now_ms - mid_time_ms(item.mid)) / 1000))


def count_connections(connections: Sized) -> None:
    """Let the connections gauge read the hub's table at each scrape."""
    CONNECTIONS.set_function(lambda: len(connections))
