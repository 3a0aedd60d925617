"""The ``switchboard`` command line: what each subcommand asks for, parsed and checked.

Pure: no I/O. ``parse`` reads the arguments and the environment it is given (for the defaults:
``SWITCHBOARD_AMQP_URL``, ``SWITCHBOARD_NAMESPACE``, ...) and returns one request; a bad argument
exits through argparse with status 2 and a usage line. ``__main__.py`` carries the request out.
``render_topology`` turns a namespace's topology into the lines ``switchboard topology`` prints.
"""

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import msgspec

from proto import env
from proto.envelopes import ApiKick, ApiPresence
from proto.frames import MAX_PRESENCE_UIDS
from proto.names import DEFAULT_NAMESPACE, Names, api_key, is_valid_namespace
from proto.rules import IDENTIFIER_CHARACTERS, MAX_ID_LENGTH, is_identifier
from proto.topology import QUEUE_TYPES, Topology, shared_topology

PROG = "switchboard"
SERVICES = {"gateway": "gateway", "router": "router", "offline-store": "offline_store"}
"""Subcommand -> the module it runs as ``python -m <module>``."""
TOKEN_TTL_S = 24 * 60 * 60.0
COMMAND_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class RunService:
    """``switchboard gateway|router|offline-store``: run that service (``python -m``)."""

    module: str


@dataclass(frozen=True, slots=True)
class Migrate:
    """``switchboard migrate``: create the offline store's tables, apply pending migrations."""


@dataclass(frozen=True, slots=True)
class MintToken:
    """``switchboard token UID``: print a development JWT, as ``make token`` does."""

    uid: str
    ttl_s: float


@dataclass(frozen=True, slots=True)
class SendCommand:
    """``switchboard kick|presence``: publish ``api.<command>`` and print its JSON reply."""

    command: str
    routing_key: str
    body: bytes
    amqp_url: str
    namespace: str
    timeout_s: float


@dataclass(frozen=True, slots=True)
class ShowTopology:
    """``switchboard topology``: print the exchanges, queues and bindings of a namespace."""

    topology: Topology
    namespace: str


Request = RunService | Migrate | MintToken | SendCommand | ShowTopology


def uid_argument(value: str) -> str:
    if not is_identifier(value):
        raise argparse.ArgumentTypeError(
            f"a uid is 1 to {MAX_ID_LENGTH} of the characters {IDENTIFIER_CHARACTERS}, "
            f"got {value!r}"
        )
    return value


def positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value!r}")
    return seconds


def namespace_argument(value: str) -> str:
    if not is_valid_namespace(value):
        raise argparse.ArgumentTypeError(f"not a valid namespace: {value!r}")
    return value


def build_parser(environ: Mapping[str, str], version: str) -> argparse.ArgumentParser:
    """The parser; the defaults of ``--amqp-url`` and ``--namespace`` come from ``environ``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run a Switchboard service, or operate a running namespace.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {version}")
    subparsers = parser.add_subparsers(
        dest="subcommand", required=True, metavar="COMMAND"
    )
    for name, module in SERVICES.items():
        subparsers.add_parser(
            name,
            help=f"run the {name.replace('-', ' ')} (python -m {module}); "
            "settings from SWITCHBOARD_* variables",
        )

    subparsers.add_parser(
        "migrate",
        help="create the offline store's tables and apply its pending schema migrations "
        "(SWITCHBOARD_POSTGRES_DSN, SWITCHBOARD_NAMESPACE, SWITCHBOARD_HISTORY), "
        "before the offline stores of a new release start",
    )

    token = subparsers.add_parser(
        "token",
        help="print a development JWT for a uid, signed with SWITCHBOARD_JWT_SECRET",
    )
    token.add_argument("uid", type=uid_argument, help="the uid (the token's sub)")
    token.add_argument(
        "--ttl-s", type=positive_seconds, default=TOKEN_TTL_S, help="validity, seconds"
    )

    namespace = env.text(environ, env.NAMESPACE, DEFAULT_NAMESPACE)
    amqp_url = environ.get(env.API_AMQP_URL) or env.text(
        environ, env.AMQP_URL, env.DEFAULT_AMQP_URL
    )
    broker = argparse.ArgumentParser(add_help=False)
    broker.add_argument(
        "--amqp-url",
        default=amqp_url,
        help=f"the broker (default: {env.API_AMQP_URL}, else {env.AMQP_URL}); "
        "the user must be allowed to publish api.* to <ns>.inbound",
    )
    broker.add_argument(
        "--namespace",
        type=namespace_argument,
        default=namespace,
        help=f"default: {env.NAMESPACE} or {DEFAULT_NAMESPACE}",
    )
    broker.add_argument(
        "--timeout-s",
        type=positive_seconds,
        default=COMMAND_TIMEOUT_S,
        help="how long to wait for the reply",
    )

    kick = subparsers.add_parser(
        "kick",
        parents=[broker],
        help='close every connection of a uid with 4005 (api.kick); prints {"kicked": N}',
    )
    kick.add_argument("uid", type=uid_argument)
    kick.add_argument("--reason", default="", help="sent to the uid's clients")

    presence = subparsers.add_parser(
        "presence",
        parents=[broker],
        help='which of these uids are online (api.presence); prints {"online": [...]}',
    )
    presence.add_argument("uids", nargs="+", type=uid_argument, metavar="UID")

    topology = subparsers.add_parser(
        "topology",
        help="print the exchanges, queues and bindings the services declare in a namespace",
    )
    topology.add_argument("--namespace", type=namespace_argument, default=namespace)
    topology.add_argument(
        "--queue-type",
        choices=QUEUE_TYPES,
        default=environ.get(env.QUEUE_TYPE) or "quorum",
        help=f"the shared queues' type (default: {env.QUEUE_TYPE} or quorum)",
    )
    topology.add_argument(
        "--history",
        choices=("on", "off"),
        default=environ.get(env.HISTORY) or "on",
        help=f"with the inbox queue of {env.HISTORY}=on (default: {env.HISTORY} or on)",
    )
    return parser


def parse(argv: Sequence[str], environ: Mapping[str, str], version: str) -> Request:
    """The request on this command line; exits with status 2 on a bad one."""
    parser = build_parser(environ, version)
    args = parser.parse_args(argv)
    name = args.subcommand
    if name in SERVICES:
        return RunService(SERVICES[name])
    if name == "migrate":
        return Migrate()
    if name == "token":
        return MintToken(args.uid, args.ttl_s)
    if name == "topology":
        topology = shared_topology(
            Names(args.namespace), args.queue_type, history=args.history == "on"
        )
        return ShowTopology(topology, args.namespace)
    if name == "kick":
        body = msgspec.json.encode(ApiKick(uid=args.uid, reason=args.reason))
    else:
        if len(args.uids) > MAX_PRESENCE_UIDS:
            parser.error(f"at most {MAX_PRESENCE_UIDS} uids at once")
        body = msgspec.json.encode(ApiPresence(uids=list(args.uids)))
    return SendCommand(
        name, api_key(name), body, args.amqp_url, args.namespace, args.timeout_s
    )


def render_topology(request: ShowTopology) -> list[str]:
    """One line per exchange, queue and binding, then the per-gateway queue's pattern."""
    topology = request.topology
    lines = [f"# namespace {request.namespace}"]
    for exchange in topology.exchanges:
        lines.append(
            f"exchange {exchange.name} {exchange.kind}{_arguments(exchange.arguments)}"
        )
    for queue in topology.queues:
        lines.append(f"queue    {queue.name}{_arguments(queue.arguments)}")
    for binding in topology.bindings:
        key = binding.routing_key or '""'
        lines.append(f"binding  {binding.exchange} --{key}--> {binding.queue}")
    names = Names(request.namespace)
    lines.append(
        f"# and one classic queue per gateway, {names.gateway_queue('<gateway_id>')}, "
        f"bound to {names.deliveries_exchange} by its gateway_id"
    )
    return lines


def _arguments(arguments: Mapping[str, object]) -> str:
    return "".join(f" {key}={value}" for key, value in sorted(arguments.items()))
