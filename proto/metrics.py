"""The names of the Prometheus metrics the services export, and of their labels.

Names only: each service registers its metrics in its own ``observability.py``, and
``runtime/health.py`` serves them; dashboards (``dashboards/``), alerts and the gateways'
autoscaler read them by these names.
Conventions (https://prometheus.io/docs/practices/naming/): one prefix, base units (seconds),
counters end in ``_total``, and labels take a small, fixed set of values (never a uid, a
conn_id or a mid). Which process a series comes from is the scrape's ``job`` and ``instance``;
which service, its ``service`` label: the metrics several services export under one name
(``SHARED_NAMES``, the ``process_*`` ones included) carry it from the service itself, with the
value of ``SERVICES`` (the pods' ``app.kubernetes.io/component`` label, which the PodMonitors
copy into ``service`` for the other metrics: the two agree).
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

CLOSES_TOTAL = "switchboard_gateway_closes_total"
"""Counter by ``code``: WebSocket closes this gateway started, by close code (``CloseCode``;
closes a client started and connections lost without a close are not counted)."""
HEARTBEATS_TOTAL = "switchboard_gateway_heartbeats_total"
"""Counter: heartbeats this gateway published and the broker confirmed (the routers route to a
gateway while they come)."""

GATEWAY_DELIVERY_ACKS_TOTAL = "switchboard_gateway_delivery_acks_total"
"""Counter by ``multiple``: acks this gateway sent RabbitMQ for the deliveries of its queue;
``true``, one multiple ack for a run of them (``gateway/delivery_acks.py``)."""
GATEWAY_PUBLISHES_TOTAL = "switchboard_gateway_broker_publishes_total"
"""Counter by ``routing_key``: messages this gateway published to the inbound exchange."""
RATE_LIMITED_TOTAL = "switchboard_gateway_rate_limited_total"
"""Counter by ``limit``: frames answered ``rate_limited``, by the limit that refused them."""

# The hops of a message, each a histogram observed per message: where its milliseconds go.
GATEWAY_BATCH_WAIT_SECONDS = "switchboard_gateway_batch_wait_seconds"
"""Histogram: from an envelope for the routers joining the next ``Batch`` to that ``Batch``'s
publish (the wait for the ``Batch`` before it to be confirmed); its publish to its confirm is
``PUBLISH_CONFIRM_SECONDS``."""
GATEWAY_PUSH_SECONDS = "switchboard_gateway_push_seconds"
"""Histogram: from a delivery's consume (from the gateway's queue) to each of its frames'
write to a client's socket."""
GATEWAY_CLIENT_ACK_SECONDS = "switchboard_gateway_client_ack_seconds"
"""Histogram: from a live message's push (queued for its connection, as its delivery is
consumed) to its client's ``ack``; stored messages replayed are left out."""

# Router
MESSAGES_ROUTED_TOTAL = "switchboard_router_messages_routed_total"
"""Counter by ``kind``: messages routed (client retries dropped are not counted)."""
UIDS_THROTTLED_TOTAL = "switchboard_router_uids_throttled_total"
"""Counter: times a uid went over its rate across gateways and its gateways were told to
throttle it."""

REDIS_SECONDS = "switchboard_router_redis_seconds"
"""Histogram by ``operation`` (``REDIS_OPERATIONS``): Redis round trips, one per pipeline."""
ROUTER_QUEUE_WAIT_SECONDS = "switchboard_router_queue_wait_seconds"
"""Histogram: a message's age (from its ``ts``, when its gateway accepted it) when the router
starts its batch: the gateway's ``Batch``, the broker, the router's queue and inbox. In whole
milliseconds (``ts`` and the router's clock rounded down): each age within 1 ms, their mean
right."""
ROUTER_BATCH_SECONDS = "switchboard_router_batch_seconds"
"""Histogram by ``stage`` (``ROUTER_STAGES``): the stages of a batch the router routed, one
observation per batch and stage."""

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

OFFLINE_INBOX_WAIT_SECONDS = "switchboard_offline_inbox_wait_seconds"
"""Histogram (history on): a message's age (from its mid's time, when it was accepted) when the
offline store starts the inbox batch that numbers it: the router's ``InboxBatch``, the broker,
``<ns>.inbox``. In whole milliseconds, as ``ROUTER_QUEUE_WAIT_SECONDS``."""
OFFLINE_INBOX_BATCH_SECONDS = "switchboard_offline_inbox_batch_seconds"
"""Histogram by ``stage`` (``INBOX_STAGES``, history on): the stages of an inbox batch the
offline store wrote, one observation per batch and stage."""

POSTGRES_SECONDS = "switchboard_offline_postgres_seconds"
"""Histogram by ``operation`` (``POSTGRES_OPERATIONS``): calls to PostgreSQL, each one statement
or one transaction (a batch's), from the pool's connection to the result."""

# Every service
BUILD_INFO = "switchboard_build_info"
"""Gauge, always 1, by ``version`` (the installed distribution's) and ``python``."""
PUBLISH_CONFIRM_SECONDS = "switchboard_publish_confirm_seconds"
"""Histogram: from a publish to the broker's confirm (confirmed publishes only; a ``Batch``
counts once)."""
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
LABEL_SERVICE = "service"
LABEL_OPERATION = "operation"
LABEL_VERSION = "version"
LABEL_PYTHON = "python"
LABEL_STAGE = "stage"
LABEL_MULTIPLE = "multiple"
SERVICES = {"gateway": "gateway", "router": "router", "offline_store": "offline-store"}
"""The ``service`` label of each service, by its package."""
DISTRIBUTION = "switchboard"
"""The distribution whose version ``BUILD_INFO`` reports (pyproject.toml's project)."""
REDIS_OPERATIONS = (
    "route",
    "settle",
    "gateways",
    "sweep",
    "going_offline",
    "groups",
    "other",
)
"""Values of ``operation`` for Redis: a batch's lookup rounds (``route``), its writes after the
confirms (``settle``), the gateways' heartbeats read (``gateways``), a dead gateway's sweep,
the going-offline claims, the group members' changes and rebuilds."""
POSTGRES_OPERATIONS = (
    "insert",
    "delete",
    "replay",
    "holding",
    "expire",
    "count",
    "inbox_write",
    "history",
    "mark",
    "groups",
)
"""Values of ``operation`` for PostgreSQL: rows stored, deleted (acknowledged), read for a
replay, uids holding rows, expiry sweeps, the backlog count, inbox batches (history), history
queries, read markers, group members."""
RATE_LIMITS = ("frames", "bytes", "uid")
"""Values of ``limit``: the connection's frames or bytes per second, or the uid's throttle."""

ROUTE_KINDS = ("direct", "group", "room", "broadcast")
ROUTER_STAGES = ("decode", "plan", "deliver", "settle")
"""Values of ``stage``: ``decode`` the batch's messages; ``plan`` its Redis lookups and routing
decision; ``deliver`` from the publish of its deliveries to their last confirm; ``settle`` from
there to its ack (in batch order: the batch before it, Redis writes, replies such as ``sent``)."""
INBOX_STAGES = ("decode", "write", "deliver", "settle")
"""Values of ``stage`` for the offline store's inbox batches: ``decode`` its ``InboxBatch``
messages into rows; ``write`` its transaction and, after the commit, the read of the connections
that started a sync; ``deliver`` from the publish of its deliveries to their last confirm;
``settle`` from there to its ack (in batch order: the batch before it, ``Saved`` and the events)."""
FRAME_TYPE_BINARY = "binary"
"""A binary WebSocket frame (rejected: Switchboard speaks JSON text)."""
FRAME_TYPE_UNKNOWN = "unknown"
"""A frame that is not JSON, has no ``type``, or one Switchboard does not know."""
CODE_ENVELOPE_REJECTED = "envelope_rejected"
CODE_BATCH_FAILED = "batch_failed"

SHARED_NAMES = (
    ERRORS_TOTAL,
    BROKER_RECONNECTS_TOTAL,
    READY,
    BUILD_INFO,
    PUBLISH_CONFIRM_SECONDS,
)
"""The metrics every service exports under the same name: labelled with ``service``, as is
every ``process_*`` one (``SHARED_PREFIX``)."""
SHARED_PREFIX = "process_"

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
    GATEWAY_DELIVERY_ACKS_TOTAL,
    OFFLINE_REFUSED_TOTAL,
    OFFLINE_EXPIRED_TOTAL,
    UNACKED_CAPPED_TOTAL,
    PRESSURE_HANDOVERS_TOTAL,
    CLOSES_TOTAL,
    HEARTBEATS_TOTAL,
    REDIS_SECONDS,
    POSTGRES_SECONDS,
    BUILD_INFO,
    PUBLISH_CONFIRM_SECONDS,
    GATEWAY_BATCH_WAIT_SECONDS,
    GATEWAY_PUSH_SECONDS,
    GATEWAY_CLIENT_ACK_SECONDS,
    ROUTER_QUEUE_WAIT_SECONDS,
    ROUTER_BATCH_SECONDS,
    OFFLINE_INBOX_WAIT_SECONDS,
    OFFLINE_INBOX_BATCH_SECONDS,
)
