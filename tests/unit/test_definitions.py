"""The committed RabbitMQ definitions match proto/topology.py, and each role's permissions
allow what it does and refuse the rest (checked here as regular expressions; the broker checks
them in tests/integration/test_least_privilege.py)."""

import re

import pytest

from proto import definitions, names
from proto.definitions import (
    BACKEND,
    GATEWAY,
    MONITOR,
    ROUTER,
    STORE,
    Permission,
    TopicPermission,
)
from proto.names import Names
from proto.topology import shared_topology

HINT = "run `make schemas` and commit k8s/rabbitmq/definitions.json"
NAMES = Names("sb")
GRANTED = definitions.permissions(NAMES)
TOPICS = definitions.topic_permissions(NAMES)
ROUTING_KEYS = [
    value
    for name, value in vars(names).items()
    if name.startswith("KEY_") and isinstance(value, str)
]


def allows(pattern: str, resource: str) -> bool:
    return re.search(pattern, resource) is not None


def topic(role: str, exchange: str) -> TopicPermission:
    (found,) = (t for t in TOPICS[role] if t.exchange == exchange)
    return found


def test_the_committed_definitions_are_generated() -> None:
    rendered = definitions.render(definitions.definitions(Names()))
    assert definitions.DEFINITIONS_PATH.read_text() == rendered, HINT


def test_every_routing_key_names_the_role_that_publishes_it() -> None:
    prefixes = definitions.KEY_PREFIXES.values()
    for key in ROUTING_KEYS:
        assert [p for p in prefixes if key.startswith(p)], key


def test_a_gateway_configures_and_reads_only_gateway_queues() -> None:
    gateway = GRANTED[GATEWAY]
    assert allows(gateway.configure, NAMES.gateway_queue("gw-1"))
    assert allows(gateway.read, NAMES.gateway_queue("gw-1"))
    shared = shared_topology(NAMES, "quorum", history=True)
    for resource in [e.name for e in shared.exchanges] + [
        q.name for q in shared.queues
    ]:
        assert not allows(gateway.configure, resource), resource
        if resource != NAMES.deliveries_exchange:  # its queue's binding
            assert not allows(gateway.read, resource), resource
    assert not allows(gateway.configure, "sb.gateway.")
    assert not allows(gateway.configure, "xsb.gateway.gw-1")


def test_a_gateway_writes_frames_and_handovers_never_deliveries() -> None:
    gateway = GRANTED[GATEWAY]
    for allowed in (NAMES.inbound_exchange, NAMES.dead_letter_exchange):
        assert allows(gateway.write, allowed)
    for refused in (
        NAMES.deliveries_exchange,
        NAMES.undeliverable_exchange,
        NAMES.events_exchange,
        NAMES.router_queue,
        "amq.default",
        "sb.inbound2",
    ):
        assert not allows(gateway.write, refused), refused


@pytest.mark.parametrize(
    ("role", "prefix"),
    [(GATEWAY, "gateway."), (ROUTER, "router."), (STORE, "store."), (BACKEND, "api.")],
)
def test_each_role_publishes_its_own_keys_to_the_inbound_exchange(
    role: str, prefix: str
) -> None:
    write = topic(role, NAMES.inbound_exchange).write
    keys = [*ROUTING_KEYS, "api.send", "api.group.add"]
    assert {key for key in keys if allows(write, key)} == {
        key for key in keys if key.startswith(prefix)
    }


def test_backends_publish_commands_and_read_events_and_replies_only() -> None:
    backend = GRANTED[BACKEND]
    assert allows(backend.write, NAMES.inbound_exchange)
    assert allows(backend.read, "amq.rabbitmq.reply-to")
    assert allows(backend.configure, "sb.backend.events")
    assert not allows(backend.configure, NAMES.router_queue)
    assert not allows(backend.read, NAMES.router_queue)
    assert not allows(backend.write, NAMES.deliveries_exchange)
    assert topic(BACKEND, NAMES.events_exchange).read == ".*"


def test_routers_and_stores_declare_every_shared_name_even_with_history() -> None:
    shared = shared_topology(NAMES, "classic", history=True)
    for role in (ROUTER, STORE):
        granted: Permission = GRANTED[role]
        for resource in [e.name for e in shared.exchanges] + [
            q.name for q in shared.queues
        ]:
            assert allows(granted.configure, resource), (role, resource)
            assert allows(granted.read, resource), (role, resource)
        assert not allows(granted.configure, NAMES.gateway_queue("gw-1"))
    assert allows(topic(ROUTER, NAMES.events_exchange).write, names.EVENT_USER_ONLINE)
    assert not allows(
        topic(STORE, NAMES.events_exchange).write, names.EVENT_USER_ONLINE
    )


def test_the_monitor_may_do_nothing_but_look() -> None:
    assert GRANTED[MONITOR] == Permission("^$", "^$", "^$")


def test_users_have_no_password_and_the_topology_follows_the_options() -> None:
    document = definitions.definitions(NAMES, "prod", "classic", history=True)
    assert {user["password_hash"] for user in document["users"]} == {""}
    assert {p["vhost"] for p in document["permissions"]} == {"prod"}
    queues = {q["name"]: q["arguments"] for q in document["queues"]}
    assert queues[NAMES.inbox_queue]["x-queue-type"] == "classic"
    assert NAMES.inbox_queue in {
        q["name"] for q in definitions.definitions(NAMES)["queues"]
    }
    relay = definitions.definitions(NAMES, history=False)
    assert NAMES.inbox_queue not in {q["name"] for q in relay["queues"]}
