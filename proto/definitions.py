"""RabbitMQ definitions of a namespace: one user per role, its permissions, and the topology.

``python -m proto.definitions`` writes ``k8s/rabbitmq/definitions.json`` (the namespace
``switchboard`` on the vhost ``/``, quorum queues, history on); ``--namespace``, ``--vhost``,
``--queue-type``, ``--no-history`` and ``--output -`` render another. The file is what
``rabbitmqctl import_definitions`` and the RabbitMQ Cluster Operator's definitions import take
(https://www.rabbitmq.com/docs/definitions). A unit test renders it again and fails on any
difference, as for the JSON Schemas.

Users come without passwords (``password_hash`` empty: nobody can log in as them until an
operator sets one with ``rabbitmqctl change_password``). Each role's permissions are regular
expressions over the exact names of ``topology.py`` (https://www.rabbitmq.com/docs/access-control),
so a queue added there is granted to its roles when the file is rendered again:

- ``<ns>-gateway``: declares, binds and consumes ``<ns>.gateway.<gateway_id>`` (any gateway id:
  every replica of a Deployment shares one user, whose pod names are not known in advance),
  publishes ``gateway.*`` to ``<ns>.inbound`` (a topic permission; its handovers to the offline
  store too, as ``gateway.handover``) and refused items to ``<ns>.dead-letter``; it configures no
  shared name, reads no shared queue and writes neither ``<ns>.deliveries`` nor
  ``<ns>.undeliverable``.
- ``<ns>-router`` and ``<ns>-offline-store``: declare the shared topology (every service may
  start first), consume their own queues, publish their own keys (``router.*``, ``store.*``
  on ``<ns>.inbound``; their events on ``<ns>.events``) and replies (the default exchange).
- ``<ns>-backend``: publishes ``api.*`` to ``<ns>.inbound`` (backends and the gateways' HTTP
  API, ``SWITCHBOARD_API_AMQP_URL``), reads replies through direct reply-to, and may declare
  queues of its own named ``<ns>.backend.*`` (or server-named) bound to ``<ns>.events``.
- ``<ns>-monitor``: no permission beyond the vhost: passive declares (KEDA's queue depths).

No policy is needed: the services declare every queue's arguments themselves. This module
writes a file; it does no network I/O.
"""

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proto.names import (
    API_KEY_PREFIX,
    DEFAULT_NAMESPACE,
    EVENT_MESSAGE_OFFLINE,
    EVENT_MESSAGE_REFUSED,
    EVENT_USER_OFFLINE,
    EVENT_USER_ONLINE,
    Names,
)
from proto.topology import QUEUE_TYPES, Topology, shared_topology

DEFINITIONS_PATH = (
    Path(__file__).resolve().parent.parent / "k8s" / "rabbitmq" / "definitions.json"
)
DEFAULT_VHOST = "/"
DEFAULT_QUEUE_TYPE = "quorum"

GATEWAY = "gateway"
ROUTER = "router"
STORE = "offline-store"
BACKEND = "backend"
MONITOR = "monitor"
ROLES = (GATEWAY, ROUTER, STORE, BACKEND, MONITOR)

KEY_PREFIXES = {
    GATEWAY: "gateway.",
    ROUTER: "router.",
    STORE: "store.",
    BACKEND: API_KEY_PREFIX,
}
"""The routing keys a role may publish to ``<ns>.inbound``: each key names its producer."""
EVENT_KEYS = {
    ROUTER: (EVENT_USER_ONLINE, EVENT_USER_OFFLINE),
    STORE: (EVENT_MESSAGE_OFFLINE, EVENT_MESSAGE_REFUSED),
}
"""The routing keys a role may publish to ``<ns>.events``."""

DEFAULT_EXCHANGE = "amq.default"
"""The default exchange's name in permissions: replies to ``reply_to`` are published there."""
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
NOTHING = "^$"
ANYTHING = ".*"
PASSWORDLESS = {
    "password_hash": "",
    "hashing_algorithm": "rabbit_password_hashing_sha256",
}


@dataclass(frozen=True, slots=True)
class Permission:
    """A user's permissions on the vhost: regular expressions over resource names."""

    configure: str
    write: str
    read: str


@dataclass(frozen=True, slots=True)
class TopicPermission:
    """A user's permissions on the routing keys of one topic exchange."""

    exchange: str
    write: str
    read: str


def user_name(names: Names, role: str) -> str:
    """The RabbitMQ user of ``role`` in this namespace: ``<ns>-<role>``."""
    return f"{names.namespace}-{role}"


def exactly(resources: Iterable[str]) -> str:
    """A regular expression matching these names and no other."""
    escaped = sorted({_escape(name) for name in resources})
    return f"^({'|'.join(escaped)})$" if escaped else NOTHING


def prefixed(prefix: str) -> str:
    """A regular expression matching the names that start with ``prefix`` (and go on)."""
    return f"^{_escape(prefix)}.+$"


def _escape(name: str) -> str:
    # Names are [a-z0-9_.-] (proto/names.py); only the dot means something to a regex.
    return name.replace(".", r"\.")


def _either(*patterns: str) -> str:
    return "|".join(f"(?:{pattern})" for pattern in patterns if pattern != NOTHING)


def permissions(names: Names) -> dict[str, Permission]:
    """Each role's permissions on the vhost (see the module's docstring)."""
    everything = shared_topology(names, DEFAULT_QUEUE_TYPE, history=True)
    shared = exactly(
        [exchange.name for exchange in everything.exchanges]
        + [queue.name for queue in everything.queues]
    )
    gateway_queues = prefixed(names.gateway_queue(""))
    backend_queues = _either(prefixed(f"{names.namespace}.backend."), r"^amq\.gen-.+$")
    # Declaring the shared topology takes configure on every name, read on the queues (their
    # dead-letter exchange) and the exchanges (bindings, the alternate exchange), write on the
    # queues (bindings) and on the dead-letter and alternate exchanges.
    backend_service = Permission(
        configure=shared,
        write=_either(shared, exactly([DEFAULT_EXCHANGE])),
        read=shared,
    )
    return {
        GATEWAY: Permission(
            configure=gateway_queues,
            # Its queue (the binding), frames and handovers (``<ns>.inbound`` is also the
            # dead-letter exchange its queue is declared with), refused items.
            write=_either(
                gateway_queues,
                exactly([names.inbound_exchange, names.dead_letter_exchange]),
            ),
            read=_either(gateway_queues, exactly([names.deliveries_exchange])),
        ),
        ROUTER: backend_service,
        STORE: backend_service,
        BACKEND: Permission(
            configure=backend_queues,
            write=_either(backend_queues, exactly([names.inbound_exchange])),
            read=_either(
                backend_queues, exactly([names.events_exchange, DIRECT_REPLY_TO])
            ),
        ),
        MONITOR: Permission(NOTHING, NOTHING, NOTHING),
    }


def topic_permissions(names: Names) -> dict[str, list[TopicPermission]]:
    """Each role's routing keys on ``<ns>.inbound`` and ``<ns>.events``."""
    inbound, events = names.inbound_exchange, names.events_exchange
    granted = {
        role: [TopicPermission(inbound, f"^{_escape(prefix)}", NOTHING)]
        for role, prefix in KEY_PREFIXES.items()
    }
    for role in (ROUTER, STORE):
        # They bind every shared queue, whatever its keys.
        granted[role] = [TopicPermission(inbound, granted[role][0].write, ANYTHING)]
        granted[role].append(
            TopicPermission(events, exactly(EVENT_KEYS[role]), NOTHING)
        )
    granted[GATEWAY].append(TopicPermission(events, NOTHING, NOTHING))
    granted[BACKEND].append(TopicPermission(events, NOTHING, ANYTHING))
    granted[MONITOR] = [
        TopicPermission(exchange, NOTHING, NOTHING) for exchange in (inbound, events)
    ]
    return granted


def definitions(
    names: Names,
    vhost: str = DEFAULT_VHOST,
    queue_type: str = DEFAULT_QUEUE_TYPE,
    history: bool = True,
) -> dict[str, Any]:
    """The definitions document of one namespace on one vhost.

    Args:
        names: the namespace's names.
        vhost: the virtual host the services connect to (their AMQP URLs' path).
        queue_type: ``SWITCHBOARD_QUEUE_TYPE`` of the deployment: the shared queues are
            declared here with the arguments the services declare them with.
        history: ``SWITCHBOARD_HISTORY`` is on, the default (the queue ``<ns>.inbox``).
    """
    topology = shared_topology(names, queue_type, history)
    granted = permissions(names)
    topics = topic_permissions(names)
    return {
        "users": [
            {"name": user_name(names, role), **PASSWORDLESS, "tags": []}
            for role in ROLES
        ],
        "vhosts": [{"name": vhost}],
        "permissions": [
            {
                "user": user_name(names, role),
                "vhost": vhost,
                "configure": granted[role].configure,
                "write": granted[role].write,
                "read": granted[role].read,
            }
            for role in ROLES
        ],
        "topic_permissions": [
            {
                "user": user_name(names, role),
                "vhost": vhost,
                "exchange": topic.exchange,
                "write": topic.write,
                "read": topic.read,
            }
            for role in ROLES
            for topic in topics[role]
        ],
        "parameters": [],
        "policies": [],
        **_topology(topology, vhost),
    }


def _topology(topology: Topology, vhost: str) -> dict[str, list[dict[str, Any]]]:
    return {
        "exchanges": [
            {
                "name": exchange.name,
                "vhost": vhost,
                "type": exchange.kind,
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": dict(exchange.arguments),
            }
            for exchange in topology.exchanges
        ],
        "queues": [
            {
                "name": queue.name,
                "vhost": vhost,
                "durable": True,
                "auto_delete": False,
                "arguments": dict(queue.arguments),
            }
            for queue in topology.queues
        ],
        "bindings": [
            {
                "source": binding.exchange,
                "vhost": vhost,
                "destination": binding.queue,
                "destination_type": "queue",
                "routing_key": binding.routing_key,
                "arguments": {},
            }
            for binding in topology.bindings
        ],
    }


def render(document: dict[str, Any]) -> str:
    """The file's text: stable key order, two-space indent, a final newline."""
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m proto.definitions", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE)
    parser.add_argument("--vhost", default=DEFAULT_VHOST)
    parser.add_argument("--queue-type", choices=QUEUE_TYPES, default=DEFAULT_QUEUE_TYPE)
    parser.add_argument(
        "--history",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="SWITCHBOARD_HISTORY on (the queue <ns>.inbox); --no-history: off",
    )
    parser.add_argument("--output", default=str(DEFINITIONS_PATH), help="- for stdout")
    args = parser.parse_args(argv)
    text = render(
        definitions(Names(args.namespace), args.vhost, args.queue_type, args.history)
    )
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
