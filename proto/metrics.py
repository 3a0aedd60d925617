"""The names of the Prometheus metrics the services export, and of their labels.

Names only: each service registers its metrics in its own ``observability.py``, and
``runtime/health.py`` serves them; dashboards (``dashboards/``), alerts and the gateways'
autoscaler read them by these names.
Conventions (https://prometheus.io/docs/practices/naming/): one prefix, base units (seconds),
counters end in ``_total``, and labels take a small, fixed set of values (never a uid, a
conn_id or a mid). Which process a series comes from is the scrape's ``job`` and ``instance``.
"""

PREFIX = "switchboard_"

# Gateway
GATEWAY_CONNECTIONS = "switchboard_gateway_connections"
"""Gauge: open WebSocket connections (the gateways' autoscaling metric)."""
FRAMES_RECEIVED_TOTAL = "switchboard_gateway_frames_received_total"
"""Counter by ``frame_type``: frames from clients."""
FRAMES_SENT_TOTAL = "switchboard_gateway_frames_sent_total"
"""Counter by ``frame_type``: frames written to clients."""
DELIVERIES_TOTAL = "switchboard_gateway_deliveries_total"
"""Counter: deliveries this gateway consumed from its queue."""
DELIVERY_LATENCY_SECONDS = "switchboard_gateway_delivery_latency_seconds"
"""Histogram: from a message's ``ts`` (its sender's gateway) to its push; live messages only."""
PRESSURE_HANDOVERS_TOTAL = "switchboard_gateway_pressure_handovers_total"
"""Counter: copies that clients had not acknowledged, handed to the offline store because the
gateway's pinned AMQP deliveries neared its prefetch (many connections not acknowledging)."""
UNACKED_CAPPED_TOTAL = "switchboard_gateway_unacked_capped_total"
"""Counter: live messages handed to the offline store instead of pushed, because their
connection held ``SWITCHBOARD_MAX_UNACKED_PER_CONNECTION`` unacknowledged messages already (or
did, and the replay of what was handed over has not caught up yet)."""

GATEWAY_PUBLISHES_TOTAL = "switchboard_gateway_broker_publishes_total"
"""Counter by ``routing_key``: messages this gateway published to the inbound exchange."""
RATE_LIMITED_TOTAL = "switchboard_gateway_rate_limited_total"
"""Counter by ``limit``: frames answered ``rate_limited``, by the limit that refused them."""

# Router
MESSAGES_ROUTED_TOTAL = "switchboard_router_messages_routed_total"
"""Counter by ``kind``: messages routed (client retries dropped are not counted)."""
UIDS_THROTTLED_TOTAL = "switchboard_router_uids_throttled_total"
"""Counter: times a uid went over its rate across gateways and its gateways were told to
throttle it."""

# Offline store
OFFLINE_STORED_TOTAL = "switchboard_offline_messages_stored_total"
"""Counter: rows inserted (messages handed to the offline store)."""
OFFLINE_REPLAYED_TOTAL = "switchboard_offline_messages_replayed_total"
"""Counter: rows replayed to connections."""
OFFLINE_ACKNOWLEDGED_TOTAL = "switchboard_offline_messages_acknowledged_total"
"""Counter: rows deleted after their client acknowledged them."""
OFFLINE_BACKLOG_MESSAGES = "switchboard_offline_backlog_messages"
"""Gauge: rows in the undelivered table, sampled periodically."""
OFFLINE_REFUSED_TOTAL = "switchboard_offline_messages_refused_total"
"""Counter: rows refused because their uid held ``SWITCHBOARD_OFFLINE_MAX_ROWS_PER_UID``."""
OFFLINE_EXPIRED_TOTAL = "switchboard_offline_messages_expired_total"
"""Counter: rows deleted unread after ``SWITCHBOARD_OFFLINE_RETENTION_S``."""

# Every service
ERRORS_TOTAL = "switchboard_errors_total"
"""Counter by ``code``: error frames sent (gateway), envelopes rejected and batches failed."""
BROKER_RECONNECTS_TOTAL = "switchboard_broker_reconnects_total"
"""Counter: times the RabbitMQ connection was re-established."""
READY = "switchboard_ready"
"""Gauge: 1 while /readyz answers 200, else 0."""

# Labels and their values
LABEL_FRAME_TYPE = "frame_type"
LABEL_KIND = "kind"
LABEL_CODE = "code"
LABEL_ROUTING_KEY = "routing_key"
LABEL_LIMIT = "limit"
RATE_LIMITS = ("frames", "bytes", "uid")
"""Values of ``limit``: the connection's frames or bytes per second, or the uid's throttle."""

ROUTE_KINDS = ("direct", "group", "room", "broadcast")
FRAME_TYPE_BINARY = "binary"
"""A binary WebSocket frame (rejected: Switchboard speaks JSON text)."""
FRAME_TYPE_UNKNOWN = "unknown"
"""A frame that is not JSON, has no ``type``, or one Switchboard does not know."""
CODE_ENVELOPE_REJECTED = "envelope_rejected"
CODE_BATCH_FAILED = "batch_failed"

ALL_NAMES = (
    GATEWAY_CONNECTIONS,
    FRAMES_RECEIVED_TOTAL,
    FRAMES_SENT_TOTAL,
    DELIVERIES_TOTAL,
    DELIVERY_LATENCY_SECONDS,
    RATE_LIMITED_TOTAL,
    MESSAGES_ROUTED_TOTAL,
    UIDS_THROTTLED_TOTAL,
    OFFLINE_STORED_TOTAL,
    OFFLINE_REPLAYED_TOTAL,
    OFFLINE_ACKNOWLEDGED_TOTAL,
    OFFLINE_BACKLOG_MESSAGES,
    ERRORS_TOTAL,
    BROKER_RECONNECTS_TOTAL,
    READY,
    GATEWAY_PUBLISHES_TOTAL,
    OFFLINE_REFUSED_TOTAL,
    OFFLINE_EXPIRED_TOTAL,
    UNACKED_CAPPED_TOTAL,
    PRESSURE_HANDOVERS_TOTAL,
)
