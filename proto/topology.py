"""The AMQP topology as data: which exchanges, queues and bindings exist, with their arguments.

Routers and offline stores declare the shared part at startup (declarations are idempotent),
and a gateway declares it when it is missing, so that a frame accepted by a gateway waits in
the router's queue even before any router has started; a gateway declares its own queue. The
RabbitMQ definitions (``definitions.py``) carry the shared part too, with the permissions of
each role's user, which let a gateway configure its own queue only. The I/O lives in
``runtime/bus.py``; this module only says what to declare. Argument names are RabbitMQ's
(https://www.rabbitmq.com/docs/queues#optional-arguments).

The ways a message reaches the offline store are declared once, in ``store_paths``: the
topology below binds the store's queues, sets the deliveries exchange's alternate exchange and
a gateway queue's dead-lettering from them, and the senders publish with them (the router's
``plan.py`` and ``inbox_items.py``, the gateway's ``bus.py``).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

from proto.names import (
    KEY_HANDOVER,
    KEY_INBOX,
    ROUTER_BINDINGS,
    ROUTER_GROUP_BINDINGS,
    ROUTER_HISTORY_BINDINGS,
    STORE_ACK_BINDINGS,
    STORE_CONTROL_BINDINGS,
    STORE_GROUP_BINDINGS,
    STORE_QUERY_BINDINGS,
    STORE_READ_BINDINGS,
    STORE_SYNC_BINDINGS,
    Names,
)

QUEUE_TYPES = ("quorum", "classic")
DELIVERY_LIMIT = 20
"""``x-delivery-limit`` of the shared quorum queues: a message returned to its queue this many
times (its consumer crashed each time, or gave it back) is dead-lettered, so that a message
that crashes every consumer cannot stop the queue forever. Declared rather than left to the
broker, whose default differs between versions (none before RabbitMQ 4.0, 20 since). Consumers
retry a batch that failed as a whole (a dependency down) in the process, holding its messages,
so an outage of any length does not count against it. Classic queues have no such limit."""


@dataclass(frozen=True, slots=True)
class ExchangeSpec:
    name: str
    kind: str
    """``topic``, ``direct`` or ``fanout``."""
    arguments: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QueueSpec:
    name: str
    arguments: Mapping[str, str | int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BindingSpec:
    queue: str
    exchange: str
    routing_key: str


@dataclass(frozen=True, slots=True)
class Topology:
    exchanges: tuple[ExchangeSpec, ...]
    queues: tuple[QueueSpec, ...]
    bindings: tuple[BindingSpec, ...]


@dataclass(frozen=True, slots=True)
class StorePath:
    """One way a message reaches the offline store: who sends it, through which exchange with
    which routing key (the binding's: "" on a fanout exchange), to which of the store's queues."""

    sender: str
    """Who publishes, and where in the code (or the broker, and the argument that makes it)."""
    exchange: str
    routing_key: str
    queue: str
    is_history_only: bool = False
    """Declared only with ``SWITCHBOARD_HISTORY`` on."""


@dataclass(frozen=True, slots=True)
class StorePaths:
    """Every way a message reaches the offline store; docs/architecture.md, "How messages
    reach the offline store", tells them in prose."""

    undeliverable: StorePath
    gone_gateway: StorePath
    handover: StorePath
    orphaned: StorePath
    inbox: StorePath

    @property
    def all(self) -> tuple[StorePath, ...]:
        return (
            self.undeliverable,
            self.gone_gateway,
            self.handover,
            self.orphaned,
            self.inbox,
        )


def store_paths(names: Names) -> StorePaths:
    """The ways into the offline store's queues ``<ns>.offline`` and (history on) ``<ns>.inbox``.

    ``<ns>.offline`` takes what is to be kept until it is delivered (``offline_store/consumers.py``,
    ``UndeliveredWriter``), ``<ns>.inbox`` the 1:1 and group messages to number first
    (``offline_store/inbox_writer.py``). A gateway's RabbitMQ user writes no exchange of the
    store's, so the gateways' copies (and their queues' dead-lettering) come as
    ``gateway.handover`` on ``<ns>.inbound``.
    """
    return StorePaths(
        undeliverable=StorePath(
            "a router, for recipients with no connection on a live gateway: the batch's such "
            "items in one Delivery (router/plan.py, PlanBuilder.build)",
            names.undeliverable_exchange,
            "",
            names.offline_queue,
        ),
        gone_gateway=StorePath(
            "the broker, for a delivery to a gateway whose queue is gone (deleted after "
            "SWITCHBOARD_GATEWAY_QUEUE_EXPIRES_S without a consumer): the alternate exchange "
            "of <ns>.deliveries (shared_topology)",
            names.undeliverable_exchange,
            "",
            names.offline_queue,
        ),
        handover=StorePath(
            "a gateway, for a copy it does not push (its connection is not there, holds "
            "SWITCHBOARD_MAX_UNACKED_PER_CONNECTION messages, or is behind: "
            "gateway/admission.py) or that its client did not acknowledge (in time, before "
            "closing, or under pressure of the prefetch: gateway/acks.py): "
            "gateway/handover.py",
            names.inbound_exchange,
            KEY_HANDOVER,
            names.offline_queue,
        ),
        orphaned=StorePath(
            "the broker, dead-lettering a delivery that waited in a gateway's queue longer "
            "than SWITCHBOARD_ORPHAN_TTL_S (its gateway died, or is far behind): "
            "gateway_topology",
            names.inbound_exchange,
            KEY_HANDOVER,
            names.offline_queue,
        ),
        inbox=StorePath(
            "a router, for a batch's 1:1 and group messages (history on): one InboxBatch "
            "(router/inbox_items.py, router/plan.py)",
            names.inbound_exchange,
            KEY_INBOX,
            names.inbox_queue,
            is_history_only=True,
        ),
    )


def _store_bindings(names: Names, is_history_only: bool) -> tuple[BindingSpec, ...]:
    """The bindings of the store's paths that are (or are not) history's alone; paths that
    share one binding share it once."""
    bindings = (
        BindingSpec(path.queue, path.exchange, path.routing_key)
        for path in store_paths(names).all
        if path.is_history_only == is_history_only
    )
    return tuple(dict.fromkeys(bindings))


def shared_topology(names: Names, queue_type: str, history: bool = False) -> Topology:
    """The exchanges and the shared queues every service declares.

    Args:
        names: the namespace's names.
        queue_type: ``quorum`` (replicated, for a RabbitMQ cluster) or ``classic`` for the shared
            queues (the router's and the offline store's).
        history: ``SWITCHBOARD_HISTORY`` is on: the routers publish 1:1 and group messages to
            the offline stores' ``<ns>.inbox`` (declared by both, so that neither waits for
            the other to start); gateways publish read markers to ``<ns>.offline.reads``
            (a write each: as durable as the other store queues), and the offline stores
            their receipts to the routers' queue.
    """
    if queue_type not in QUEUE_TYPES:
        raise ValueError(f"queue_type must be one of {QUEUE_TYPES}, got {queue_type!r}")
    shared_args: dict[str, str | int] = {
        "x-queue-type": queue_type,
        # A message a consumer rejects (malformed) is kept for an operator, never redelivered.
        "x-dead-letter-exchange": names.dead_letter_exchange,
    }
    if queue_type == "quorum":
        shared_args["x-delivery-limit"] = DELIVERY_LIMIT
    exchanges = (
        ExchangeSpec(names.inbound_exchange, "topic"),
        ExchangeSpec(names.events_exchange, "topic"),
        ExchangeSpec(names.dead_letter_exchange, "fanout"),
        ExchangeSpec(names.undeliverable_exchange, "fanout"),
        ExchangeSpec(
            names.deliveries_exchange,
            "direct",
            # A delivery for a gateway whose queue is gone goes to the offline store.
            {"alternate-exchange": store_paths(names).gone_gateway.exchange},
        ),
    )
    queues: tuple[QueueSpec, ...] = (
        QueueSpec(names.router_queue, shared_args),
        QueueSpec(names.offline_queue, shared_args),
        QueueSpec(names.store_control_queue, shared_args),
        QueueSpec(names.store_acks_queue, shared_args),
        QueueSpec(names.store_groups_queue, shared_args),
        QueueSpec(names.router_groups_queue, shared_args),
        QueueSpec(names.dead_letter_queue, {"x-queue-type": queue_type}),
    )
    if history:
        queues += (
            QueueSpec(names.inbox_queue, shared_args),
            QueueSpec(names.store_reads_queue, shared_args),
        )
        # Classic whatever SWITCHBOARD_QUEUE_TYPE says: a query lost with a broker node is
        # asked again by its client, and an answer is worth nothing late.
        queues += (
            QueueSpec(
                names.store_queries_queue,
                {
                    "x-queue-type": "classic",
                    "x-dead-letter-exchange": names.dead_letter_exchange,
                },
            ),
        )
    bindings: tuple[BindingSpec, ...] = (
        *(
            BindingSpec(names.router_queue, names.inbound_exchange, key)
            for key in ROUTER_BINDINGS
        ),
        *(
            BindingSpec(names.store_control_queue, names.inbound_exchange, key)
            for key in STORE_CONTROL_BINDINGS
        ),
        *(
            BindingSpec(names.store_acks_queue, names.inbound_exchange, key)
            for key in STORE_ACK_BINDINGS
        ),
        *(
            BindingSpec(names.store_groups_queue, names.inbound_exchange, key)
            for key in STORE_GROUP_BINDINGS
        ),
        *(
            BindingSpec(names.router_groups_queue, names.inbound_exchange, key)
            for key in ROUTER_GROUP_BINDINGS
        ),
        *_store_bindings(names, is_history_only=False),
        BindingSpec(names.dead_letter_queue, names.dead_letter_exchange, ""),
    )
    if history:
        bindings += (
            *_store_bindings(names, is_history_only=True),
            *(
                BindingSpec(names.store_reads_queue, names.inbound_exchange, key)
                for key in STORE_READ_BINDINGS
            ),
            *(
                BindingSpec(names.router_queue, names.inbound_exchange, key)
                for key in ROUTER_HISTORY_BINDINGS
            ),
        )
        bindings += tuple(
            BindingSpec(names.store_queries_queue, names.inbound_exchange, key)
            for key in STORE_QUERY_BINDINGS
        ) + tuple(
            BindingSpec(names.store_control_queue, names.inbound_exchange, key)
            for key in STORE_SYNC_BINDINGS
        )
    return Topology(exchanges, queues, bindings)


def gateway_topology(
    names: Names,
    gateway_id: str,
    orphan_ttl_ms: int,
    expires_ms: int,
    queue_type: str = "classic",
) -> Topology:
    """The queue of one gateway process, bound to the deliveries exchange by its ``gateway_id``.

    A delivery that waits in it longer than ``orphan_ttl_ms`` (its gateway died, or is far behind)
    is dead-lettered to the offline store; a queue without a consumer for ``expires_ms`` is deleted
    by the broker. Deliveries that the gateway holds unacknowledged do not expire.

    ``queue_type`` (``SWITCHBOARD_GATEWAY_QUEUE_TYPE``): ``classic`` lives on one broker node,
    and its expired deliveries are dead-lettered at most once; what it holds is out of reach
    while that node is down, and lost with it. ``quorum``, for a RabbitMQ cluster, is replicated
    on the cluster's nodes and dead-letters at least once (``x-dead-letter-strategy``, which
    needs ``x-overflow: reject-publish``; no length limit is set, so nothing is refused for it).

    Raises:
        ValueError: ``expires_ms`` is not longer than ``orphan_ttl_ms``: the queue would be deleted
            with messages still in it, and those would be lost.
    """
    if queue_type not in QUEUE_TYPES:
        raise ValueError(f"queue_type must be one of {QUEUE_TYPES}, got {queue_type!r}")
    if expires_ms <= orphan_ttl_ms:
        raise ValueError(
            "the gateway queue must outlive the orphan TTL of its messages"
        )
    orphaned = store_paths(names).orphaned
    arguments: dict[str, str | int] = {
        "x-queue-type": queue_type,
        # A delivery that waits longer goes to the offline store (store_paths). Through
        # the inbound exchange, as the gateway's own handovers: a gateway's user may write
        # no exchange of the offline store's (declaring a dead-letter exchange takes write).
        "x-message-ttl": orphan_ttl_ms,
        "x-dead-letter-exchange": orphaned.exchange,
        "x-dead-letter-routing-key": orphaned.routing_key,
        "x-expires": expires_ms,
    }
    if queue_type == "quorum":
        arguments["x-dead-letter-strategy"] = "at-least-once"
        arguments["x-overflow"] = "reject-publish"
    queue = QueueSpec(names.gateway_queue(gateway_id), arguments)
    binding = BindingSpec(queue.name, names.deliveries_exchange, gateway_id)
    return Topology(exchanges=(), queues=(queue,), bindings=(binding,))
