"""The wire contract: mids, names, topology, frames and envelopes."""

import inspect
import re
from collections.abc import Callable

import msgspec
import pytest

import proto.names
from proto import envelopes, frames, sync
from proto.codes import ErrorCode
from proto.mids import MID_PATTERN, MidFactory, mid_time_ms
from proto.names import (
    API_KEY_PREFIX,
    BATCHABLE_KEYS,
    DEFAULT_NAMESPACE,
    EVENT_MESSAGE_OFFLINE,
    EVENT_USER_OFFLINE,
    EVENT_USER_ONLINE,
    GROUP_COMMANDS,
    KEY_ACK,
    KEY_ACK_BATCH,
    KEY_BATCH,
    KEY_CONN_CLOSED,
    KEY_CONN_OPENED,
    KEY_CONVERSATIONS,
    KEY_GATEWAY_STOPPED,
    KEY_GROUP_CHANGED,
    KEY_GROUPS_PAGE,
    KEY_GROUPS_REQUEST,
    KEY_HANDOVER,
    KEY_HEARTBEAT,
    KEY_HISTORY,
    KEY_INBOX,
    KEY_PRESENCE,
    KEY_READ,
    KEY_RECEIPTS,
    KEY_REPLAY,
    KEY_REPLAY_BATCH,
    KEY_REPLAY_MORE,
    KEY_ROOM_JOINED,
    KEY_ROOM_LEFT,
    KEY_SAVED,
    KEY_SEND,
    KEY_SYNC,
    KEY_SYNC_MORE,
    Names,
    api_key,
    is_valid_namespace,
)
from proto.topology import (
    DELIVERY_LIMIT,
    QUEUE_TYPES,
    BindingSpec,
    QueueSpec,
    Topology,
    gateway_topology,
    shared_topology,
    store_paths,
)

NODE = "0123456789"
T0_MS = 1_700_000_000_000

# --- mids -----------------------------------------------------------------------------


def test_mids_strictly_increase_and_sort_as_strings() -> None:
    factory = MidFactory(NODE)
    times = [T0_MS, T0_MS, T0_MS + 1, T0_MS + 1, T0_MS + 1, T0_MS + 500, T0_MS + 10**6]
    mids = [factory.next_mid(now_ms) for now_ms in times]
    assert mids == sorted(mids)
    assert len(set(mids)) == len(mids)
    assert all(MID_PATTERN.fullmatch(mid) for mid in mids)
    assert [mid_time_ms(mid) for mid in mids] == times


def test_mid_carries_time_counter_and_node() -> None:
    factory = MidFactory(NODE)
    first, second = factory.next_mid(T0_MS), factory.next_mid(T0_MS)
    assert first == f"{T0_MS:012x}0000{NODE}"
    assert second == f"{T0_MS:012x}0001{NODE}"


def test_mids_keep_increasing_when_the_clock_goes_back() -> None:
    factory = MidFactory(NODE)
    before = factory.next_mid(T0_MS + 1000)
    after = [factory.next_mid(T0_MS), factory.next_mid(T0_MS - 5000)]
    assert before < after[0] < after[1]
    assert mid_time_ms(after[1]) == T0_MS + 1000


def test_mid_counter_overflows_into_the_next_millisecond() -> None:
    factory = MidFactory(NODE)
    mids = [factory.next_mid(T0_MS) for _ in range(0x10000)]
    overflow = factory.next_mid(T0_MS)
    assert mids[-1] == f"{T0_MS:012x}ffff{NODE}"
    assert overflow == f"{T0_MS + 1:012x}0000{NODE}"
    # The real next millisecond must not reuse the borrowed one.
    assert factory.next_mid(T0_MS + 1) > overflow


@pytest.mark.parametrize(
    "node", ["", "012345678", "0123456789a", "ABCDEF0123", "g123456789", "01234 6789"]
)
def test_mid_factory_rejects_a_bad_node(node: str) -> None:
    with pytest.raises(ValueError, match="node"):
        MidFactory(node)


# --- names ----------------------------------------------------------------------------


def all_names(space: Names, sample: str = "x1") -> dict[str, str]:
    """Every name a ``Names`` gives: properties, and methods called with ``sample``."""
    found = {}
    for attribute, member in inspect.getmembers(type(space)):
        if attribute.startswith("_") or attribute == "namespace":
            continue
        if isinstance(member, property):
            found[attribute] = getattr(space, attribute)
        elif inspect.isfunction(member):
            arity = len(inspect.signature(member).parameters) - 1
            found[attribute] = getattr(space, attribute)(*[sample] * arity)
    return found


def test_names_are_all_found() -> None:
    found = all_names(Names("ns"))
    assert {"router_queue", "gateway_queue", "presence_key", "schema"} <= found.keys()
    assert len(found) >= 14


def test_every_name_of_a_namespace() -> None:
    assert all_names(Names("ns"), "x1") == {
        "inbound_exchange": "ns.inbound",
        "deliveries_exchange": "ns.deliveries",
        "undeliverable_exchange": "ns.undeliverable",
        "events_exchange": "ns.events",
        "dead_letter_exchange": "ns.dead-letter",
        "dead_letter_queue": "ns.dead-letter",
        "router_queue": "ns.router",
        "offline_queue": "ns.offline",
        "store_control_queue": "ns.offline.control",
        "store_acks_queue": "ns.offline.acks",
        "store_groups_queue": "ns.offline.groups",
        "router_groups_queue": "ns.router.groups",
        "gateway_queue": "ns.gateway.x1",
        "presence_key": "ns:presence:{x1}",
        "offline_due_key": "ns:offline-due:{x1}",
        "gateway_key": "ns:gateway:{x1}",
        "gateways_key": "ns:gateways",
        "dedup_key": "ns:dedup:{x1}:x1",
        "api_dedup_key": "ns:dedup-api:{x1}:x1",
        "sweep_lock_key": "ns:sweep:{x1}",
        "group_key": "ns:group:{x1}",
        "group_version_key": "ns:group-version:{x1}",
        "groups_loaded_key": "ns:groups-loaded:{groups}",
        "groups_rebuild_key": "ns:groups-rebuild:{groups}",
        "groups_pages_key": "ns:groups-pages:{groups}:x1",
        "room_key": "ns:room:{x1}",
        "gateway_rooms_key": "ns:gateway:{x1}:rooms",
        "room_members_key": "ns:room-members:{x1}:x1",
        "gateway_known_key": "ns:gateway:{x1}:known",
        "going_offline_key": "ns:going-offline",
        "member_of_key": "ns:member-of:{x1}",
        "member_of_version_key": "ns:member-of-version:{x1}",
        "rate_key": "ns:rate:{x1}:x1",
        "redis_pattern": "ns:*",
        "schema": "ns",
        "schema_migrations_table": "ns.schema_migrations",
        "undelivered_table": "ns.undelivered",
        "store_queries_queue": "ns.offline.queries",
        "store_reads_queue": "ns.offline.reads",
        "groups_table": "ns.groups",
        "group_members_table": "ns.group_members",
        "inbox_queue": "ns.inbox",
        "messages_table": "ns.messages",
        "inbox_table": "ns.inbox",
        "inbox_heads_table": "ns.inbox_heads",
        "conversations_table": "ns.conversations",
        "receipts_table": "ns.receipts",
        "conversation_expired_table": "ns.conversation_expired",
        "recent_syncs_table": "ns.recent_syncs",
    }


@pytest.mark.parametrize("sample", ["x1", "team", "lobby"])
def test_names_of_one_kind_never_collide(sample: str) -> None:
    found = all_names(Names("ns"), sample)
    redis_keys = [v for k, v in found.items() if k.endswith("_key")]
    queues = [v for k, v in found.items() if k.endswith("_queue")]
    exchanges = [v for k, v in found.items() if k.endswith("_exchange")]
    for kind in (redis_keys, queues, exchanges):
        assert len(set(kind)) == len(kind), kind
    assert all(":" in key and "." not in key.split(":")[0] for key in redis_keys)


@pytest.mark.parametrize(
    ("command", "routing_key"),
    [
        ("send", "api.send"),
        ("group.add", "api.group.add"),
        ("room.count", "api.room.count"),
    ],
)
def test_api_key(command: str, routing_key: str) -> None:
    assert api_key(command) == routing_key
    assert routing_key.startswith(API_KEY_PREFIX)


@pytest.mark.parametrize("namespace", ["switchboard", "t0123456789ab", "a", "a_1"])
def test_every_name_carries_the_namespace(namespace: str) -> None:
    for attribute, value in all_names(Names(namespace)).items():
        prefix = re.split(r"[.:]", value, maxsplit=1)[0]
        assert prefix == namespace, f"{attribute} = {value!r}"


def test_default_namespace() -> None:
    assert Names().namespace == DEFAULT_NAMESPACE == "switchboard"
    assert Names().router_queue == "switchboard.router"


@pytest.mark.parametrize(
    "namespace",
    ["", "Switchboard", "1abc", "_abc", "a-b", "a.b", "a:b", "a b", "a;drop", "a" * 41],
)
def test_invalid_namespace_is_rejected(namespace: str) -> None:
    assert not is_valid_namespace(namespace)
    with pytest.raises(ValueError, match="namespace"):
        Names(namespace)


def test_longest_namespace_is_accepted() -> None:
    assert Names("a" * 40).schema == "a" * 40


@pytest.mark.parametrize(
    ("first", "second"),
    [("switchboard", "switchboard2"), ("a", "ab"), ("a", "a_"), ("t1", "t12")],
)
@pytest.mark.parametrize("sample", ["x1", "gateway", "a.b", "a:b", ""])
def test_two_namespaces_never_share_a_name(
    first: str, second: str, sample: str
) -> None:
    ours = set(all_names(Names(first), sample).values())
    theirs = set(all_names(Names(second), sample).values())
    assert not ours & theirs


# --- topology -------------------------------------------------------------------------


def topic_matches(pattern: str, routing_key: str) -> bool:
    """RabbitMQ topic matching: ``*`` is one word, ``#`` is zero or more words."""

    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        return bool(k) and p[0] in ("*", k[0]) and match(p[1:], k[1:])

    return match(pattern.split("."), routing_key.split("."))


def routed_queues(topology: Topology, exchange: str, routing_key: str) -> set[str]:
    kinds = {spec.name: spec.kind for spec in topology.exchanges}
    kind = kinds[exchange]
    return {
        binding.queue
        for binding in topology.bindings
        if binding.exchange == exchange
        and (
            kind == "fanout"
            or (kind == "direct" and binding.routing_key == routing_key)
            or (kind == "topic" and topic_matches(binding.routing_key, routing_key))
        )
    }


SPACE = Names("ns")
ROUTING = {
    KEY_CONN_OPENED: SPACE.router_queue,
    KEY_CONN_CLOSED: SPACE.router_queue,
    KEY_SEND: SPACE.router_queue,
    KEY_HEARTBEAT: SPACE.router_queue,
    KEY_GATEWAY_STOPPED: SPACE.router_queue,
    KEY_ROOM_JOINED: SPACE.router_queue,
    KEY_ROOM_LEFT: SPACE.router_queue,
    KEY_PRESENCE: SPACE.router_queue,
    KEY_BATCH: SPACE.router_queue,
    KEY_SAVED: SPACE.router_queue,
    KEY_ACK: SPACE.store_acks_queue,
    KEY_ACK_BATCH: SPACE.store_acks_queue,
    KEY_REPLAY: SPACE.store_control_queue,
    KEY_REPLAY_BATCH: SPACE.store_control_queue,
    KEY_REPLAY_MORE: SPACE.store_control_queue,
    KEY_GROUP_CHANGED: SPACE.router_groups_queue,
    KEY_GROUPS_PAGE: SPACE.router_groups_queue,
    KEY_GROUPS_REQUEST: SPACE.store_groups_queue,
    KEY_INBOX: SPACE.inbox_queue,
    KEY_READ: SPACE.store_reads_queue,
    KEY_RECEIPTS: SPACE.router_queue,
    KEY_HISTORY: SPACE.store_queries_queue,
    KEY_CONVERSATIONS: SPACE.store_queries_queue,
    KEY_SYNC: SPACE.store_control_queue,
    KEY_SYNC_MORE: SPACE.store_control_queue,
    KEY_HANDOVER: SPACE.offline_queue,
}
HISTORY_ONLY = frozenset(
    (
        KEY_INBOX,
        KEY_READ,
        KEY_RECEIPTS,
        KEY_HISTORY,
        KEY_CONVERSATIONS,
        KEY_SYNC,
        KEY_SYNC_MORE,
    )
)
"""Keys of history and sync: bound only with history on, so that with it off nothing fills a
queue that no consumer reads."""


def test_topic_matcher() -> None:
    assert topic_matches("api.#", "api")
    assert topic_matches("api.#", "api.kick.user")
    assert topic_matches("a.*", "a.b")
    assert not topic_matches("a.*", "a.b.c")
    assert not topic_matches("gateway.send", "gateway.sent")


def test_batchable_keys_reach_only_the_router() -> None:
    to_router = {k for k, q in ROUTING.items() if q == SPACE.router_queue}
    assert BATCHABLE_KEYS.issubset(to_router)


def test_every_routing_key_has_an_expected_queue() -> None:
    declared = {
        value for key, value in vars(proto.names).items() if key.startswith("KEY_")
    }
    assert declared == ROUTING.keys()


@pytest.mark.parametrize("queue_type", QUEUE_TYPES)
@pytest.mark.parametrize("routing_key", sorted(HISTORY_ONLY))
def test_history_keys_reach_no_queue_with_history_off(
    routing_key: str, queue_type: str
) -> None:
    topology = shared_topology(SPACE, queue_type)
    assert routed_queues(topology, SPACE.inbound_exchange, routing_key) == set()
    assert SPACE.store_queries_queue not in {q.name for q in topology.queues}


@pytest.mark.parametrize("queue_type", QUEUE_TYPES)
@pytest.mark.parametrize(("routing_key", "queue"), ROUTING.items())
def test_inbound_routing_key_reaches_exactly_its_queue(
    routing_key: str, queue: str, queue_type: str
) -> None:
    topology = shared_topology(SPACE, queue_type, history=True)
    assert routed_queues(topology, SPACE.inbound_exchange, routing_key) == {queue}


@pytest.mark.parametrize("queue_type", QUEUE_TYPES)
def test_the_queries_queue_is_classic_and_takes_the_history_commands(
    queue_type: str,
) -> None:
    topology = shared_topology(SPACE, queue_type, history=True)
    (queries,) = [q for q in topology.queues if q.name == SPACE.store_queries_queue]
    assert queries.arguments["x-queue-type"] == "classic"
    for command in ("history", "conversations", "message"):
        routed = routed_queues(topology, SPACE.inbound_exchange, f"api.{command}")
        assert routed == {SPACE.router_queue, SPACE.store_queries_queue}
    without = shared_topology(SPACE, queue_type)
    assert routed_queues(without, SPACE.inbound_exchange, "api.history") == {
        SPACE.router_queue
    }


def test_the_inbox_queue_exists_only_with_history() -> None:
    without = shared_topology(SPACE, "quorum")
    assert SPACE.inbox_queue not in {queue.name for queue in without.queues}
    assert routed_queues(without, SPACE.inbound_exchange, KEY_INBOX) == set()
    queues = {q.name: q for q in shared_topology(SPACE, "quorum", history=True).queues}
    assert queues[SPACE.inbox_queue].arguments["x-queue-type"] == "quorum"


@pytest.mark.parametrize("queue_type", QUEUE_TYPES)
def test_reads_and_receipts_are_bound_only_with_history(queue_type: str) -> None:
    without = shared_topology(SPACE, queue_type)
    assert SPACE.store_reads_queue not in {queue.name for queue in without.queues}
    for key in (KEY_READ, KEY_RECEIPTS):
        assert routed_queues(without, SPACE.inbound_exchange, key) == set()
    with_history = shared_topology(SPACE, queue_type, history=True)
    queues = {q.name: q for q in with_history.queues}
    # A read marker is a write: as durable as the store's other shared queues.
    assert (
        queues[SPACE.store_reads_queue].arguments
        == queues[SPACE.offline_queue].arguments
    )


@pytest.mark.parametrize(
    "routing_key",
    ["api.kick", "api.push.broadcast", *map(api_key, envelopes.COMMANDS)],
)
def test_backend_commands_reach_the_router(routing_key: str) -> None:
    topology = shared_topology(SPACE, "quorum")
    routed = routed_queues(topology, SPACE.inbound_exchange, routing_key)
    # The offline store serves the group commands; the router leaves them to it.
    served_by_store = routing_key.removeprefix("api.") in GROUP_COMMANDS
    expected = {SPACE.store_groups_queue} if served_by_store else set()
    assert routed == {SPACE.router_queue, *expected}


@pytest.mark.parametrize(
    "routing_key",
    ["gateway.unknown", "store.other", "send", "user.online", "message.offline"],
)
def test_unknown_inbound_key_reaches_no_queue(routing_key: str) -> None:
    topology = shared_topology(SPACE, "quorum")
    assert routed_queues(topology, SPACE.inbound_exchange, routing_key) == set()


def test_undeliverable_reaches_the_offline_queue() -> None:
    topology = shared_topology(SPACE, "quorum")
    routed = routed_queues(topology, SPACE.undeliverable_exchange, "anything")
    assert routed == {SPACE.offline_queue}


def test_deliveries_fall_back_to_the_offline_store() -> None:
    exchanges = {e.name: e for e in shared_topology(SPACE, "quorum").exchanges}
    deliveries = exchanges[SPACE.deliveries_exchange]
    assert deliveries.kind == "direct"
    assert deliveries.arguments["alternate-exchange"] == SPACE.undeliverable_exchange


@pytest.mark.parametrize("history", [False, True])
def test_each_way_into_the_offline_store_is_bound_to_its_queue(history: bool) -> None:
    topology = shared_topology(SPACE, "quorum", history)
    store_queues = {SPACE.offline_queue, SPACE.inbox_queue}
    for path in store_paths(SPACE).all:
        if path.is_history_only and not history:
            assert path.queue not in {queue.name for queue in topology.queues}
            continue
        routed = routed_queues(topology, path.exchange, path.routing_key)
        # Only the store's queue: nothing else consumes what is on its way there.
        assert routed & store_queues == {path.queue}, path.sender
        assert path.queue in {queue.name for queue in topology.queues}


def test_a_gone_gateways_deliveries_take_the_declared_way_to_the_store() -> None:
    gone = store_paths(SPACE).gone_gateway
    exchanges = {e.name: e for e in shared_topology(SPACE, "quorum").exchanges}
    alternate = exchanges[SPACE.deliveries_exchange].arguments["alternate-exchange"]
    assert alternate == gone.exchange
    routed = routed_queues(shared_topology(SPACE, "quorum"), alternate, "gw-gone")
    assert routed == {gone.queue}


def test_an_orphaned_delivery_takes_the_declared_way_to_the_store() -> None:
    orphaned = store_paths(SPACE).orphaned
    (queue,) = gateway_topology(SPACE, "gw1", 30_000, 600_000).queues
    exchange = queue.arguments["x-dead-letter-exchange"]
    routing_key = queue.arguments["x-dead-letter-routing-key"]
    assert (exchange, routing_key) == (orphaned.exchange, orphaned.routing_key)
    topology = shared_topology(SPACE, "quorum")
    assert isinstance(exchange, str)
    assert isinstance(routing_key, str)
    assert routed_queues(topology, exchange, routing_key) == {orphaned.queue}


@pytest.mark.parametrize("queue_type", QUEUE_TYPES)
def test_shared_queues_have_the_queue_type(queue_type: str) -> None:
    topology = shared_topology(SPACE, queue_type)
    assert {q.name for q in topology.queues} == {
        SPACE.router_queue,
        SPACE.offline_queue,
        SPACE.store_control_queue,
        SPACE.store_acks_queue,
        SPACE.store_groups_queue,
        SPACE.router_groups_queue,
        SPACE.dead_letter_queue,
    }
    assert all(q.arguments["x-queue-type"] == queue_type for q in topology.queues)


def test_shared_exchanges_and_their_kinds() -> None:
    exchanges = {e.name: e.kind for e in shared_topology(SPACE, "quorum").exchanges}
    assert exchanges == {
        SPACE.inbound_exchange: "topic",
        SPACE.events_exchange: "topic",
        SPACE.dead_letter_exchange: "fanout",
        SPACE.undeliverable_exchange: "fanout",
        SPACE.deliveries_exchange: "direct",
    }


@pytest.mark.parametrize("queue_type", QUEUE_TYPES)
def test_consumed_queues_dead_letter_to_the_dead_letter_queue(queue_type: str) -> None:
    topology = shared_topology(SPACE, queue_type)
    queues = {q.name: q.arguments for q in topology.queues}
    # The delivery limit is declared (RabbitMQ's default differs between versions); classic
    # queues have none.
    limit = {"x-delivery-limit": DELIVERY_LIMIT} if queue_type == "quorum" else {}
    for name in (
        SPACE.router_queue,
        SPACE.offline_queue,
        SPACE.store_control_queue,
        SPACE.store_acks_queue,
    ):
        assert queues[name] == {
            "x-queue-type": queue_type,
            "x-dead-letter-exchange": SPACE.dead_letter_exchange,
            **limit,
        }
    # The dead-letter queue itself dead-letters nowhere: no loop.
    assert queues[SPACE.dead_letter_queue] == {"x-queue-type": queue_type}
    routed = routed_queues(topology, SPACE.dead_letter_exchange, "gateway.send")
    assert routed == {SPACE.dead_letter_queue}


@pytest.mark.parametrize(
    "routing_key",
    [EVENT_USER_ONLINE, EVENT_USER_OFFLINE, EVENT_MESSAGE_OFFLINE],
)
def test_events_reach_only_the_queues_backends_bind(routing_key: str) -> None:
    shared = shared_topology(SPACE, "quorum")
    assert routed_queues(shared, SPACE.events_exchange, routing_key) == set()
    backend = Topology(
        exchanges=shared.exchanges,
        queues=(
            *shared.queues,
            QueueSpec("billing.presence"),
            QueueSpec("billing.mail"),
        ),
        bindings=(
            *shared.bindings,
            BindingSpec("billing.presence", SPACE.events_exchange, "user.*"),
            BindingSpec("billing.mail", SPACE.events_exchange, EVENT_MESSAGE_OFFLINE),
        ),
    )
    expected = (
        "billing.mail" if routing_key.startswith("message.") else "billing.presence"
    )
    assert routed_queues(backend, SPACE.events_exchange, routing_key) == {expected}


def test_every_event_key_is_declared() -> None:
    declared = {
        value for key, value in vars(proto.names).items() if key.startswith("EVENT_")
    }
    assert declared == {
        "user.online",
        "user.offline",
        "message.offline",
        "message.refused",
    }


def test_unknown_queue_type_is_rejected() -> None:
    with pytest.raises(ValueError, match="queue_type"):
        shared_topology(SPACE, "stream")


def test_gateway_queue_arguments() -> None:
    topology = gateway_topology(SPACE, "gw1", orphan_ttl_ms=30_000, expires_ms=600_000)
    (queue,) = topology.queues
    assert queue.name == SPACE.gateway_queue("gw1")
    assert queue.arguments == {
        "x-queue-type": "classic",
        "x-message-ttl": 30_000,
        "x-dead-letter-exchange": SPACE.inbound_exchange,
        "x-dead-letter-routing-key": KEY_HANDOVER,
        "x-expires": 600_000,
    }


def test_handovers_and_expired_deliveries_reach_only_the_offline_queue() -> None:
    topology = shared_topology(SPACE, "quorum", history=True)
    (queue,) = gateway_topology(SPACE, "gw1", 30_000, 600_000).queues
    dead_letters = (
        queue.arguments["x-dead-letter-exchange"],
        queue.arguments["x-dead-letter-routing-key"],
    )
    assert dead_letters == (SPACE.inbound_exchange, KEY_HANDOVER)
    routed = routed_queues(topology, SPACE.inbound_exchange, KEY_HANDOVER)
    assert routed == {SPACE.offline_queue}


def test_a_gateway_queue_is_classic_or_a_quorum_queue_that_dead_letters_at_least_once() -> (
    None
):
    (classic,) = gateway_topology(SPACE, "gw1", 30_000, 600_000).queues
    assert classic.arguments["x-queue-type"] == "classic"
    assert "x-dead-letter-strategy" not in classic.arguments
    (quorum,) = gateway_topology(SPACE, "gw1", 30_000, 600_000, "quorum").queues
    assert quorum.arguments == {
        **classic.arguments,
        "x-queue-type": "quorum",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    with pytest.raises(ValueError, match="queue_type"):
        gateway_topology(SPACE, "gw1", 30_000, 600_000, "stream")


def test_deliveries_reach_only_their_gateway_queue() -> None:
    shared = shared_topology(SPACE, "quorum")
    gateways = [gateway_topology(SPACE, g, 30_000, 600_000) for g in ("gw1", "gw2")]
    whole = Topology(
        exchanges=shared.exchanges,
        queues=shared.queues + tuple(q for t in gateways for q in t.queues),
        bindings=shared.bindings + tuple(b for t in gateways for b in t.bindings),
    )
    assert routed_queues(whole, SPACE.deliveries_exchange, "gw1") == {
        SPACE.gateway_queue("gw1")
    }
    assert routed_queues(whole, SPACE.deliveries_exchange, "gw3") == set()


@pytest.mark.parametrize("expires_ms", [30_000, 29_999, 0])
def test_gateway_queue_must_outlive_its_messages(expires_ms: int) -> None:
    with pytest.raises(ValueError, match="outlive"):
        gateway_topology(SPACE, "gw1", orphan_ttl_ms=30_000, expires_ms=expires_ms)


# --- client frames --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"type":"init","token":"abc"}', frames.Init(token="abc")),
        ('{"type":"ack","mids":["m1","m2"]}', frames.Ack(mids=["m1", "m2"])),
        ('{"type":"ack","mids":[]}', frames.Ack(mids=[])),
        ('{"type":"ping"}', frames.Ping()),
        ('{"type":"ping","id":"p1"}', frames.Ping(id="p1")),
        ('{"type":"ping","id":null}', frames.Ping()),
        (
            '{"type":"join","id":"c2","room":"lobby"}',
            frames.Join(id="c2", room="lobby"),
        ),
        (
            '{"type":"leave","id":"c3","room":"lobby"}',
            frames.Leave(id="c3", room="lobby"),
        ),
        (
            '{"type":"presence","id":"c4","uids":["alice","bob"]}',
            frames.PresenceQuery(id="c4", uids=["alice", "bob"]),
        ),
        (
            '{"type":"presence","id":"c4","uids":[]}',
            frames.PresenceQuery(id="c4", uids=[]),
        ),
    ],
)
def test_client_frames_decode(text: str, expected: frames.AnyClientFrame) -> None:
    assert frames.decode_client_frame(text) == expected
    assert frames.decode_client_frame(text.encode()) == expected


def test_send_frame_decodes() -> None:
    frame = frames.decode_client_frame(
        '{"type":"send","id":"c1","to":"bob","body":"hi"}'
    )
    assert isinstance(frame, frames.Send)
    assert (frame.id, frame.to, bytes(frame.body)) == ("c1", "bob", b'"hi"')
    assert (frame.group, frame.room, frame.broadcast) == (None, None, False)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ('"group":"team"', ("team", None, False)),
        ('"room":"lobby"', (None, "lobby", False)),
        ('"broadcast":true', (None, None, True)),
        ('"broadcast":false', (None, None, False)),
        ('"group":null,"room":null', (None, None, False)),
    ],
)
def test_send_frame_decodes_each_address(
    address: str, expected: tuple[str | None, str | None, bool]
) -> None:
    frame = frames.decode_client_frame(
        '{"type":"send","id":"c1",' + address + ',"body":[1]}'
    )
    assert isinstance(frame, frames.Send)
    assert frame.to is None
    assert (frame.group, frame.room, frame.broadcast) == expected
    assert bytes(frame.body) == b"[1]"


@pytest.mark.parametrize(
    "text",
    [
        '{"type":"send","id":"c1","body":1}',
        '{"type":"send","id":"c1","to":"bob","group":"team","body":1}',
        '{"type":"send","id":"c1","room":"r","broadcast":true,"body":1}',
    ],
)
def test_exactly_one_address_is_not_the_decoders_rule(text: str) -> None:
    # The gateway's session rejects these with invalid_field; the decoder accepts them.
    assert isinstance(frames.decode_client_frame(text), frames.Send)


def test_unknown_fields_are_ignored() -> None:
    text = '{"v":2,"type":"init","extra":{"deep":[1,2]},"token":"abc","z":null}'
    assert frames.decode_client_frame(text) == frames.Init(token="abc")


@pytest.mark.parametrize(
    "body",
    [
        '{"b": [1, 2.50, 1e3], "a" :null}',
        '"caf\\u00e9 \\ud83d\\ude00"',
        '"café 😀"',
        "123456789012345678901234567890",
        "-0.0",
        "[ ]",
        "{}",
        "null",
        "true",
    ],
)
def test_send_body_is_passed_through_byte_for_byte(body: str) -> None:
    text = '{"type":"send","id":"c1","to":"bob","body":' + body + ',"z":1}'
    frame = frames.decode_client_frame(text.encode())
    assert isinstance(frame, frames.Send)
    assert isinstance(frame.body, msgspec.Raw)
    assert bytes(frame.body) == body.encode()


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ('{"type":"init","token":1}', "$.token"),
        ('{"type":"init","token":""}', "$.token"),
        ('{"type":"send","id":1,"to":"bob","body":1}', "$.id"),
        ('{"type":"send","id":"c1","to":"","body":1}', "$.to"),
        ('{"type":"send","id":"' + "x" * 129 + '","to":"b","body":1}', "$.id"),
        ('{"type":"ack","mids":"m1"}', "$.mids"),
        ('{"type":"ack","mids":["m1",2]}', "$.mids[1]"),
        ('{"type":"ack","mids":[' + ",".join(['"m"'] * 1001) + "]}", "$.mids"),
        ('{"type":"ping","id":5}', "$.id"),
        ('{"type":"send","id":"c1","group":"","body":1}', "$.group"),
        ('{"type":"send","id":"c1","room":1,"body":1}', "$.room"),
        ('{"type":"send","id":"c1","broadcast":"true","body":1}', "$.broadcast"),
        ('{"type":"send","id":"c1","broadcast":1,"body":1}', "$.broadcast"),
        ('{"type":"join","id":"c1","room":""}', "$.room"),
        ('{"type":"join","id":"c1","room":["lobby"]}', "$.room"),
        ('{"type":"join","id":"","room":"lobby"}', "$.id"),
        ('{"type":"leave","id":1,"room":"lobby"}', "$.id"),
        ('{"type":"presence","id":"c1","uids":"alice"}', "$.uids"),
        ('{"type":"presence","id":"c1","uids":["alice",""]}', "$.uids[1]"),
        (
            '{"type":"presence","id":"c1","uids":[' + ",".join(['"u"'] * 1001) + "]}",
            "$.uids",
        ),
        ('{"type":"nope"}', "$.type"),
        ('{"type":7}', "$.type"),
    ],
)
def test_wrong_field_raises_validation_error_with_path(text: str, path: str) -> None:
    with pytest.raises(msgspec.ValidationError) as caught:
        frames.decode_client_frame(text)
    assert f"`{path}`" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"type":"send","to":"bob","body":1}', "id"),
        ('{"type":"send","id":"c1","to":"bob"}', "body"),
        ('{"type":"join","id":"c1"}', "room"),
        ('{"type":"join","room":"lobby"}', "id"),
        ('{"type":"leave","id":"c1"}', "room"),
        ('{"type":"presence","id":"c1"}', "uids"),
        ('{"type":"presence","uids":[]}', "id"),
        ('{"type":"init"}', "token"),
        ('{"token":"abc"}', "type"),
    ],
)
def test_missing_field_is_named(text: str, field: str) -> None:
    with pytest.raises(
        msgspec.ValidationError, match=f"missing required field `{field}`"
    ):
        frames.decode_client_frame(text)


@pytest.mark.parametrize("text", ["[]", "1", '"init"', "null"])
def test_non_object_frame_is_a_validation_error(text: str) -> None:
    with pytest.raises(msgspec.ValidationError):
        frames.decode_client_frame(text)


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b'{"type":"ping"} x', b"\xff"])
def test_malformed_json_is_a_decode_error_not_a_validation_error(raw: bytes) -> None:
    with pytest.raises(msgspec.DecodeError) as caught:
        frames.decode_client_frame(raw)
    assert not isinstance(caught.value, msgspec.ValidationError)


def test_unknown_type_is_recognisable() -> None:
    probe = frames.probe_frame('{"type":"subscribe","id":"c9","topic":"x"}')
    assert probe.type not in frames.CLIENT_FRAME_TYPES
    assert probe.id == "c9"


def test_client_frame_types_match_the_union() -> None:
    tags = {cls.__struct_config__.tag for cls in frames.AnyClientFrame.__args__}
    assert tags == frames.CLIENT_FRAME_TYPES


# --- server frames --------------------------------------------------------------------


def test_message_encodes_from_and_passes_body_through() -> None:
    body = msgspec.Raw(b'{"text": "hi",  "n":1.50}')
    message = frames.Message(mid="m1", sender="alice", to="bob", body=body, ts=17)
    encoded = frames.encode(message)
    assert encoded == (
        b'{"type":"message","mid":"m1","from":"alice",'
        b'"body":{"text": "hi",  "n":1.50},"ts":17,"to":"bob"}'
    )
    assert b"sender" not in encoded
    assert frames.decode_server_frame(encoded) == message


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            frames.Message(
                mid="m1", sender="alice", body=msgspec.Raw(b"1"), ts=17, group="team"
            ),
            b',"group":"team"}',
        ),
        (
            frames.Message(
                mid="m1", sender="alice", body=msgspec.Raw(b"1"), ts=17, room="lobby"
            ),
            b',"room":"lobby"}',
        ),
        (
            frames.Message(
                mid="m1", sender="alice", body=msgspec.Raw(b"1"), ts=17, broadcast=True
            ),
            b',"broadcast":true}',
        ),
    ],
)
def test_message_carries_only_its_address(
    message: frames.Message, expected: bytes
) -> None:
    encoded = frames.encode(message)
    assert (
        encoded
        == b'{"type":"message","mid":"m1","from":"alice","body":1,"ts":17' + expected
    )
    assert frames.decode_server_frame(encoded) == message


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (frames.Pong(), b'{"type":"pong"}'),
        (frames.Pong(id="p1"), b'{"type":"pong","id":"p1"}'),
        (
            frames.Error(code="invalid_json", message="bad"),
            b'{"type":"error","code":"invalid_json","message":"bad"}',
        ),
        (
            frames.Error(code="unavailable", message="retry", id="c1"),
            b'{"type":"error","code":"unavailable","message":"retry","id":"c1"}',
        ),
        (
            frames.Ready(uid="alice", conn="k1"),
            b'{"type":"ready","uid":"alice","conn":"k1"}',
        ),
        (frames.Sent(id="c1", mid="m1"), b'{"type":"sent","id":"c1","mid":"m1"}'),
        (frames.Kicked(reason="bye"), b'{"type":"kicked","reason":"bye"}'),
        (
            frames.Joined(id="c2", room="lobby"),
            b'{"type":"joined","id":"c2","room":"lobby"}',
        ),
        (
            frames.Left(id="c3", room="lobby"),
            b'{"type":"left","id":"c3","room":"lobby"}',
        ),
        (
            frames.PresenceResult(id="c4", online=["alice"]),
            b'{"type":"presence","id":"c4","online":["alice"]}',
        ),
        (
            frames.PresenceResult(id="c4", online=[]),
            b'{"type":"presence","id":"c4","online":[]}',
        ),
    ],
)
def test_server_frames_encode(frame: frames.AnyServerFrame, expected: bytes) -> None:
    assert frames.encode(frame) == expected
    assert frames.decode_server_frame(expected) == frame


# --- envelopes ------------------------------------------------------------------------

RAW = msgspec.Raw(b'{"type":"message","mid":"m1","body":[1, 2]}')
ENVELOPES: list[tuple[Callable[[bytes], envelopes.Envelope], envelopes.Envelope]] = [
    (
        envelopes.decode_conn_opened,
        envelopes.ConnOpened(uid="a", conn_id="k", gateway_id="g"),
    ),
    (
        envelopes.decode_conn_closed,
        envelopes.ConnClosed(uid="a", conn_id="k", gateway_id="g"),
    ),
    (
        envelopes.decode_conn_closed,
        envelopes.ConnClosed(
            uid="a", conn_id="k", gateway_id="g", rooms=["lobby", "ops"]
        ),
    ),
    (
        envelopes.decode_outgoing,
        envelopes.Outgoing(
            mid="m1",
            sender="alice",
            client_id="c1",
            to="bob",
            body=msgspec.Raw(b'{"x": 1}'),
            ts=T0_MS,
            gateway_id="gw1",
            conn_id="k1",
        ),
    ),
    (
        envelopes.decode_outgoing,
        envelopes.Outgoing(
            mid="m2",
            sender="alice",
            client_id="c2",
            group="team",
            body=msgspec.Raw(b'"hi"'),
            ts=T0_MS,
            gateway_id="gw1",
            conn_id="k1",
        ),
    ),
    (
        envelopes.decode_outgoing,
        envelopes.Outgoing(
            mid="m3",
            sender="ops",
            client_id="c3",
            broadcast=True,
            body=msgspec.Raw(b"null"),
            ts=T0_MS,
            gateway_id="gw1",
            conn_id="k1",
        ),
    ),
    (
        envelopes.decode_room_joined,
        envelopes.RoomJoined(uid="a", conn_id="k", gateway_id="g", room="lobby"),
    ),
    (
        envelopes.decode_room_left,
        envelopes.RoomLeft(uid="a", conn_id="k", gateway_id="g", room="lobby"),
    ),
    (
        envelopes.decode_presence_asked,
        envelopes.PresenceAsked(
            uid="a", conn_id="k", gateway_id="g", client_id="c4", uids=["b", "c"]
        ),
    ),
    (envelopes.decode_acked, envelopes.Acked(uid="a", mids=["m1", "m2"])),
    (envelopes.decode_heartbeat, envelopes.Heartbeat(gateway_id="g", connections=3)),
    (envelopes.decode_gateway_stopped, envelopes.GatewayStopped(gateway_id="g")),
    (
        envelopes.decode_delivery,
        envelopes.Delivery(
            items=[
                envelopes.DeliveryItem(
                    frame=RAW,
                    targets=[
                        envelopes.Target("bob", "k1"),
                        envelopes.Target("eve", ""),
                    ],
                    mid="m1",
                    durable=True,
                ),
                envelopes.DeliveryItem(
                    frame=msgspec.Raw(b'{"type":"kicked","reason":"x"}'),
                    targets=[envelopes.Target("bob", "k2")],
                    close_code=4005,
                ),
                envelopes.DeliveryItem(
                    frame=msgspec.Raw(b'{"type":"message","room":"lobby"}'),
                    targets=[],
                    mid="m2",
                    room="lobby",
                ),
                envelopes.DeliveryItem(
                    frame=msgspec.Raw(b'{"type":"message","broadcast":true}'),
                    targets=[],
                    mid="m3",
                    broadcast=True,
                ),
            ]
        ),
    ),
    (
        envelopes.decode_batch,
        envelopes.Batch(
            items=[
                envelopes.Batched(KEY_SEND, msgspec.Raw(b'{"mid":"m1"}')),
                envelopes.Batched(KEY_HEARTBEAT, msgspec.Raw(b'{"gateway_id":"g"}')),
            ]
        ),
    ),
    (envelopes.decode_saved, envelopes.Saved(uids=[envelopes.SavedUid("bob", "m1")])),
    (
        envelopes.decode_replay_request,
        envelopes.ReplayRequest(
            uid="bob", targets=[envelopes.ReplayTarget("gw1", "k1")], from_mid="m0"
        ),
    ),
]


@pytest.mark.parametrize(
    ("decode", "envelope"),
    ENVELOPES,
    ids=[f"{type(e).__name__}{n}" for n, (_, e) in enumerate(ENVELOPES)],
)
def test_envelope_round_trips(decode, envelope: envelopes.Envelope) -> None:
    encoded = envelopes.encode(envelope)
    assert decode(encoded) == envelope
    assert envelopes.encode(decode(encoded)) == encoded


def test_every_envelope_decoder_is_exercised() -> None:
    decoders = {v for k, v in vars(envelopes).items() if k.startswith("decode_")}
    assert decoders == {decode for decode, _ in ENVELOPES}


def test_delivery_targets_are_arrays_and_frame_is_raw() -> None:
    delivery = envelopes.Delivery(
        items=[
            envelopes.DeliveryItem(frame=RAW, targets=[envelopes.Target("bob", "k1")])
        ]
    )
    encoded = envelopes.encode(delivery)
    # No seq: null in its place (history off, or a copy that is not numbered).
    assert b'"targets":[["bob","k1",null]]' in encoded
    assert b'"frame":' + bytes(RAW) in encoded
    item = envelopes.decode_delivery(encoded).items[0]
    assert (item.mid, item.durable, item.stored, item.close_code) == (
        "",
        False,
        False,
        0,
    )
    assert (item.room, item.broadcast) == ("", False)


def test_conn_closed_without_rooms_decodes() -> None:
    # A gateway that predates rooms sends no `rooms`.
    closed = envelopes.decode_conn_closed(b'{"uid":"a","conn_id":"k","gateway_id":"g"}')
    assert closed.rooms == []


@pytest.mark.parametrize(
    ("decode", "body", "path"),
    [
        (
            envelopes.decode_conn_closed,
            b'{"uid":"a","conn_id":"k","gateway_id":"g","rooms":"r"}',
            "$.rooms",
        ),
        (
            envelopes.decode_room_joined,
            b'{"uid":"a","conn_id":"k","gateway_id":"g","room":1}',
            "$.room",
        ),
        (
            envelopes.decode_presence_asked,
            b'{"uid":"a","conn_id":"k","gateway_id":"g","client_id":"c","uids":[1]}',
            "$.uids[0]",
        ),
        (
            envelopes.decode_delivery,
            b'{"items":[{"frame":1,"targets":[],"broadcast":"true"}]}',
            "$.items[0].broadcast",
        ),
        (
            envelopes.decode_outgoing,
            b'{"mid":"m","sender":"a","client_id":"c","body":1,"ts":"1","gateway_id":"g","conn_id":"k"}',
            "$.ts",
        ),
    ],
)
def test_new_envelope_fields_are_strict(decode, body: bytes, path: str) -> None:
    with pytest.raises(msgspec.ValidationError) as caught:
        decode(body)
    assert f"`{path}`" in str(caught.value)


def test_envelope_ignores_unknown_fields() -> None:
    text = b'{"gateway_id":"g","connections":1,"version":2,"extra":[1]}'
    assert envelopes.decode_heartbeat(text) == envelopes.Heartbeat(
        gateway_id="g", connections=1
    )


def test_envelope_with_wrong_shape_is_a_validation_error() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$\.connections"):
        envelopes.decode_heartbeat(b'{"gateway_id":"g","connections":"1"}')


# --- backend commands, replies and events ---------------------------------------------


def decode_command(name: str, body: bytes | str) -> envelopes.Command:
    return msgspec.json.decode(body, type=envelopes.COMMANDS[name])


def test_every_command_name_maps_to_a_command_class() -> None:
    assert set(envelopes.COMMANDS) == {
        "send",
        "broadcast",
        "kick",
        "group.add",
        "group.remove",
        "group.members",
        "presence",
        "connections",
        "room.count",
        "history",
        "conversations",
        "message",
    }
    for name, command in envelopes.COMMANDS.items():
        assert issubclass(command, envelopes.Command), name
        assert not issubclass(command, envelopes.Envelope), name
        assert api_key(name) == f"api.{name}"
    defined = {
        value
        for module in (envelopes, sync)
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, envelopes.Command)
        and value is not envelopes.Command
    }
    assert defined == set(envelopes.COMMANDS.values())


@pytest.mark.parametrize(
    ("name", "body", "expected"),
    [
        (
            "send",
            '{"to":"bob","body":{"text":"hi"}}',
            envelopes.ApiSend(to="bob", body=msgspec.Raw(b'{"text":"hi"}')),
        ),
        (
            "send",
            '{"group":"team","body":"hello","from":"billing","id":"invoice-42"}',
            envelopes.ApiSend(
                group="team",
                body=msgspec.Raw(b'"hello"'),
                sender="billing",
                id="invoice-42",
            ),
        ),
        (
            "send",
            '{"room":"lobby","body":1}',
            envelopes.ApiSend(room="lobby", body=msgspec.Raw(b"1")),
        ),
        (
            "broadcast",
            '{"body":[1,2],"from":"ops"}',
            envelopes.ApiBroadcast(body=msgspec.Raw(b"[1,2]"), sender="ops"),
        ),
        ("kick", '{"uid":"mallory"}', envelopes.ApiKick(uid="mallory")),
        (
            "kick",
            '{"uid":"mallory","reason":"banned"}',
            envelopes.ApiKick(uid="mallory", reason="banned"),
        ),
        (
            "group.add",
            '{"group":"team","uids":["a","b"]}',
            envelopes.ApiGroupMembers(group="team", uids=["a", "b"]),
        ),
        (
            "group.remove",
            '{"group":"team","uids":[]}',
            envelopes.ApiGroupMembers(group="team", uids=[]),
        ),
        ("presence", '{"uids":["a"]}', envelopes.ApiPresence(uids=["a"])),
        ("connections", '{"uid":"a"}', envelopes.ApiConnections(uid="a")),
        ("room.count", '{"room":"lobby"}', envelopes.ApiRoomCount(room="lobby")),
    ],
)
def test_commands_decode(name: str, body: str, expected: envelopes.Command) -> None:
    assert decode_command(name, body) == expected
    assert decode_command(name, body.encode()) == expected


@pytest.mark.parametrize("name", ["send", "broadcast"])
def test_command_sender_defaults_to_system(name: str) -> None:
    command = decode_command(name, '{"to":"bob","body":1}')
    assert isinstance(command, envelopes.ApiSend | envelopes.ApiBroadcast)
    assert command.sender == "system"
    assert b'"from":"system"' in msgspec.json.encode(command)
    assert b"sender" not in msgspec.json.encode(command)


def test_command_ignores_unknown_fields() -> None:
    body = '{"uid":"mallory","v":2,"sender":"x","extra":{"deep":[1]},"reason":"r"}'
    assert decode_command("kick", body) == envelopes.ApiKick(uid="mallory", reason="r")
    send = decode_command("send", '{"to":"bob","body":1,"sender":"eve"}')
    assert isinstance(send, envelopes.ApiSend)
    assert send.sender == "system"


def test_command_body_is_passed_through_byte_for_byte() -> None:
    body = '{"b": [1, 2.50, 1e3], "a" :null, "s":"caf\\u00e9"}'
    command = decode_command("send", '{"to":"bob","body":' + body + "}")
    assert isinstance(command, envelopes.ApiSend)
    assert bytes(command.body) == body.encode()


@pytest.mark.parametrize(
    ("name", "body", "path"),
    [
        ("send", '{"to":1,"body":1}', "$.to"),
        ("send", '{"to":"bob","body":1,"from":null}', "$.from"),
        ("send", '{"to":"bob","body":1,"id":42}', "$.id"),
        ("broadcast", '{"body":1,"from":7}', "$.from"),
        ("kick", '{"uid":1}', "$.uid"),
        ("kick", '{"uid":"a","reason":false}', "$.reason"),
        ("group.add", '{"group":"team","uids":"bob"}', "$.uids"),
        ("group.remove", '{"group":"team","uids":["bob",2]}', "$.uids[1]"),
        ("presence", '{"uids":[null]}', "$.uids[0]"),
        ("connections", '{"uid":["a"]}', "$.uid"),
        ("room.count", '{"room":1}', "$.room"),
    ],
)
def test_command_with_wrong_field_is_a_validation_error(
    name: str, body: str, path: str
) -> None:
    with pytest.raises(msgspec.ValidationError) as caught:
        decode_command(name, body)
    assert f"`{path}`" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "body", "field"),
    [
        ("send", '{"to":"bob"}', "body"),
        ("broadcast", "{}", "body"),
        ("kick", '{"reason":"x"}', "uid"),
        ("group.add", '{"uids":["a"]}', "group"),
        ("group.remove", '{"group":"team"}', "uids"),
        ("presence", "{}", "uids"),
        ("connections", "{}", "uid"),
        ("room.count", "{}", "room"),
    ],
)
def test_command_missing_field_is_named(name: str, body: str, field: str) -> None:
    with pytest.raises(
        msgspec.ValidationError, match=f"missing required field `{field}`"
    ):
        decode_command(name, body)


@pytest.mark.parametrize("body", ["[]", '"send"', "1", "null"])
def test_command_that_is_not_an_object_is_a_validation_error(body: str) -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_command("send", body)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (envelopes.SendReply(mid="m1"), b'{"mid":"m1"}'),
        (envelopes.KickReply(kicked=2), b'{"kicked":2}'),
        (envelopes.OkReply(), b'{"ok":true}'),
        (envelopes.PresenceReply(online=["alice"]), b'{"online":["alice"]}'),
        (envelopes.PresenceReply(online=[]), b'{"online":[]}'),
        (
            envelopes.ConnectionsReply(
                connections=[envelopes.ConnectionInfo(conn_id="k1", gateway_id="gw1")]
            ),
            b'{"connections":[{"conn_id":"k1","gateway_id":"gw1"}]}',
        ),
        (envelopes.RoomCountReply(count=3), b'{"count":3}'),
        (
            envelopes.ErrorReply(
                error=envelopes.ErrorDetail(
                    code=ErrorCode.UNKNOWN_COMMAND, message="no such command"
                )
            ),
            b'{"error":{"code":"unknown_command","message":"no such command"}}',
        ),
    ],
)
def test_replies_encode_as_documented(
    reply: envelopes.Envelope, expected: bytes
) -> None:
    assert envelopes.encode(reply) == expected
    assert msgspec.json.decode(expected, type=type(reply)) == reply


@pytest.mark.parametrize(
    ("reply_type", "body", "path"),
    [
        (envelopes.RoomCountReply, b'{"count":"1"}', "$.count"),
        (envelopes.KickReply, b'{"kicked":"1"}', "$.kicked"),
        (envelopes.KickReply, b'{"kicked":1.5}', "$.kicked"),
        (envelopes.OkReply, b'{"ok":"true"}', "$.ok"),
        (envelopes.ErrorReply, b'{"error":"unknown_command"}', "$.error"),
    ],
)
def test_replies_decode_strictly(
    reply_type: type[envelopes.Envelope], body: bytes, path: str
) -> None:
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.json.decode(body, type=reply_type)
    assert f"`{path}`" in str(caught.value)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            envelopes.UserOnline(uid="alice", ts=T0_MS),
            b'{"uid":"alice","ts":%d}' % T0_MS,
        ),
        (
            envelopes.UserOffline(uid="alice", ts=T0_MS),
            b'{"uid":"alice","ts":%d}' % T0_MS,
        ),
        (
            envelopes.MessageOffline(uid="bob", mid="m1", ts=T0_MS),
            b'{"uid":"bob","mid":"m1","ts":%d}' % T0_MS,
        ),
    ],
)
def test_events_encode_as_documented(
    event: envelopes.Envelope, expected: bytes
) -> None:
    assert envelopes.encode(event) == expected
    assert msgspec.json.decode(expected, type=type(event)) == event
