"""Environment variables: their names, and typed readers whose errors name the variable to fix.

Each service reads its settings once, in ``Settings.from_env``, through these readers. A reader
never puts a secret's value into an error.
"""

import math
from collections.abc import Mapping
from urllib.parse import urlsplit

from proto.errors import SettingsError
from proto.placeholders import is_placeholder

AMQP_URL = "SWITCHBOARD_AMQP_URL"
REDIS_URL = "SWITCHBOARD_REDIS_URL"
REDIS_SENTINELS = "SWITCHBOARD_REDIS_SENTINELS"
"""``host:port`` of each Redis Sentinel, comma-separated; set, the router finds the master
named ``SWITCHBOARD_REDIS_MASTER`` through them, follows its failovers, and takes only the
database number and credentials from ``SWITCHBOARD_REDIS_URL``."""
REDIS_MASTER = "SWITCHBOARD_REDIS_MASTER"
"""The name the Sentinels monitor the master under (``sentinel monitor <name> ...``)."""
REDIS_CLUSTER = "SWITCHBOARD_REDIS_CLUSTER"
"""``true``: Redis is a Redis Cluster and ``SWITCHBOARD_REDIS_URL`` one of its nodes (a seed:
the router learns the others and which slots each serves from it); ``false`` (the default): one
server, or the master that Sentinels name."""
POSTGRES_DSN = "SWITCHBOARD_POSTGRES_DSN"
NAMESPACE = "SWITCHBOARD_NAMESPACE"
JWT_SECRET = "SWITCHBOARD_JWT_SECRET"
GATEWAY_HOST = "SWITCHBOARD_GATEWAY_HOST"
GATEWAY_PORT = "SWITCHBOARD_GATEWAY_PORT"
GATEWAY_ID = "SWITCHBOARD_GATEWAY_ID"
LOG_LEVEL = "SWITCHBOARD_LOG_LEVEL"
EVENT_LOOP = "SWITCHBOARD_EVENT_LOOP"
"""The services' event loop: ``asyncio`` (the standard library's, the default) or ``uvloop``
(libuv's)."""
QUEUE_TYPE = "SWITCHBOARD_QUEUE_TYPE"
INIT_TIMEOUT_S = "SWITCHBOARD_INIT_TIMEOUT_S"
IDLE_TIMEOUT_S = "SWITCHBOARD_IDLE_TIMEOUT_S"
PING_INTERVAL_S = "SWITCHBOARD_PING_INTERVAL_S"
ACK_TIMEOUT_S = "SWITCHBOARD_ACK_TIMEOUT_S"
ORPHAN_TTL_S = "SWITCHBOARD_ORPHAN_TTL_S"
GATEWAY_QUEUE_EXPIRES_S = "SWITCHBOARD_GATEWAY_QUEUE_EXPIRES_S"
GATEWAY_QUEUE_TYPE = "SWITCHBOARD_GATEWAY_QUEUE_TYPE"
"""``classic`` (the default: one broker node) or ``quorum`` (replicated, for a RabbitMQ cluster)
for each gateway's own queue; see ``proto.topology.gateway_topology``."""
HEARTBEAT_INTERVAL_S = "SWITCHBOARD_HEARTBEAT_INTERVAL_S"
GATEWAY_TTL_S = "SWITCHBOARD_GATEWAY_TTL_S"
PUBLISH_TIMEOUT_S = "SWITCHBOARD_PUBLISH_TIMEOUT_S"
CONNECT_TIMEOUT_S = "SWITCHBOARD_CONNECT_TIMEOUT_S"
SHUTDOWN_TIMEOUT_S = "SWITCHBOARD_SHUTDOWN_TIMEOUT_S"
QUERY_TIMEOUT_S = "SWITCHBOARD_QUERY_TIMEOUT_S"
REDIS_TIMEOUT_S = "SWITCHBOARD_REDIS_TIMEOUT_S"
HTTP_PORT = "SWITCHBOARD_HTTP_PORT"
HTTP_HOST = "SWITCHBOARD_HTTP_HOST"
"""Address the backend HTTP API listens on; unset: ``SWITCHBOARD_GATEWAY_HOST``."""
API_KEY = "SWITCHBOARD_API_KEY"
API_AMQP_URL = "SWITCHBOARD_API_AMQP_URL"
COMMAND_TIMEOUT_S = "SWITCHBOARD_COMMAND_TIMEOUT_S"
PUBLIC_ROOM_PREFIX = "SWITCHBOARD_PUBLIC_ROOM_PREFIX"
PRESENCE_DEBOUNCE_S = "SWITCHBOARD_PRESENCE_DEBOUNCE_S"
MAX_FRAME_BYTES = "SWITCHBOARD_MAX_FRAME_BYTES"
OUTBOX_FRAMES = "SWITCHBOARD_OUTBOX_FRAMES"
DEDUP_TTL_S = "SWITCHBOARD_DEDUP_TTL_S"
PREFETCH = "SWITCHBOARD_PREFETCH"
CONSUMER_CHECK_S = "SWITCHBOARD_CONSUMER_CHECK_S"
BATCH_MAX = "SWITCHBOARD_BATCH_MAX"
REPLAY_PAGE = "SWITCHBOARD_REPLAY_PAGE"
METRICS_PORT = "SWITCHBOARD_METRICS_PORT"
"""Port of /livez, /readyz and /metrics (HTTP); unset: not served."""
MAX_ROOMS_PER_CONNECTION = "SWITCHBOARD_MAX_ROOMS_PER_CONNECTION"
COMPRESSION = "SWITCHBOARD_COMPRESSION"
"""``deflate``: the gateway negotiates permessage-deflate with clients that offer it."""
ALLOWED_ORIGINS = "SWITCHBOARD_ALLOWED_ORIGINS"
"""Comma-separated Origin values the gateway accepts; unset: any origin."""
RATE_LIMIT_PER_S = "SWITCHBOARD_RATE_LIMIT_PER_S"
RATE_LIMIT_BURST = "SWITCHBOARD_RATE_LIMIT_BURST"
MAX_CONNECTIONS_PER_UID = "SWITCHBOARD_MAX_CONNECTIONS_PER_UID"
JWT_ALGORITHM = "SWITCHBOARD_JWT_ALGORITHM"
JWT_PUBLIC_KEY = "SWITCHBOARD_JWT_PUBLIC_KEY"
"""Path of a PEM file with the public key that verifies RS256 / ES256 tokens."""
JWT_AUDIENCE = "SWITCHBOARD_JWT_AUDIENCE"
"""Comma-separated ``aud`` values a token must hold one of; unset: tokens must hold no ``aud``."""
JWT_ISSUER = "SWITCHBOARD_JWT_ISSUER"
"""The ``iss`` a token must hold; unset: not checked."""
JWT_LEEWAY_S = "SWITCHBOARD_JWT_LEEWAY_S"
"""Clock skew allowed on a token's ``exp`` and ``nbf`` (0 to 300 seconds)."""
JWKS_URL = "SWITCHBOARD_JWKS_URL"
"""The identity provider's JWKS (``https://.../certs``): RS256 / ES256 keys picked by ``kid``,
instead of ``SWITCHBOARD_JWT_PUBLIC_KEY``."""
JWKS_REFRESH_S = "SWITCHBOARD_JWKS_REFRESH_S"
"""How often the key set is fetched again, so that keys the provider dropped stop verifying."""
JWKS_MIN_FETCH_INTERVAL_S = "SWITCHBOARD_JWKS_MIN_FETCH_INTERVAL_S"
"""The least time between two fetches that tokens with an unknown ``kid`` ask for."""
JWKS_TIMEOUT_S = "SWITCHBOARD_JWKS_TIMEOUT_S"
"""Deadline of one fetch of the key set."""
DEVELOPMENT = "SWITCHBOARD_DEVELOPMENT"
"""``on``: accept the public placeholder secrets of the repository (the Makefile's development
secret, the Kubernetes placeholders, in a secret or a URL's password); ``off`` (the default):
refuse to start with one."""
MAX_COMMAND_BYTES = "SWITCHBOARD_MAX_COMMAND_BYTES"
OFFLINE_MAX_ROWS_PER_UID = "SWITCHBOARD_OFFLINE_MAX_ROWS_PER_UID"
"""Most offline rows one uid may hold; a message over it is refused with ``recipient_full``."""
OFFLINE_RETENTION_S = "SWITCHBOARD_OFFLINE_RETENTION_S"
"""Age after which an offline row is deleted unread (and never replayed)."""
OFFLINE_SWEEP_INTERVAL_S = "SWITCHBOARD_OFFLINE_SWEEP_INTERVAL_S"
"""Pause between two passes of the offline store's retention sweep."""
MAX_UNACKED_PER_CONNECTION = "SWITCHBOARD_MAX_UNACKED_PER_CONNECTION"
"""Messages one connection may leave unacknowledged; what passes goes to the offline store."""
PRESENCE_POLICY = "SWITCHBOARD_PRESENCE_POLICY"
"""Who may learn a uid's presence from a client ``presence`` frame (``proto.limits``)."""
RATE_LIMIT_PER_UID_PER_S = "SWITCHBOARD_RATE_LIMIT_PER_UID_PER_S"
"""Frames per second one uid may send across every gateway; 0: no limit."""
RATE_LIMIT_PER_UID_BURST = "SWITCHBOARD_RATE_LIMIT_PER_UID_BURST"
RATE_LIMIT_BYTES_PER_S = "SWITCHBOARD_RATE_LIMIT_BYTES_PER_S"
"""Bytes per second one connection may send; 0: no limit."""
RATE_LIMIT_BYTES_BURST = "SWITCHBOARD_RATE_LIMIT_BYTES_BURST"
MAX_AMQP_MESSAGE_BYTES = "SWITCHBOARD_MAX_AMQP_MESSAGE_BYTES"
"""The most bytes of one AMQP message a service builds (deliveries, replay pages, handovers,
batches); larger ones are split. Keep it under the broker's ``max_message_size``."""
RETRY_BACKOFF_MAX_S = "SWITCHBOARD_RETRY_BACKOFF_MAX_S"
"""Longest pause between two attempts at a batch that failed as a whole (a dependency down)."""
HISTORY = "SWITCHBOARD_HISTORY"
"""``on`` (the default): the offline store keeps every 1:1 and group message as history, numbers
each uid's inbox (``seq``) and serves sync, history and read markers; ``off``: a relay that keeps
a message only until it is acknowledged. Every service of a namespace must agree."""
HISTORY_DAYS = "SWITCHBOARD_HISTORY_DAYS"
"""Days of history the offline store keeps (fractions allowed); older entries are not read and
are deleted. 0 keeps everything."""
SYNC_PAGE = "SWITCHBOARD_SYNC_PAGE"
"""Inbox entries per sync window, at most (offline store)."""
SYNC_GRACE_S = "SWITCHBOARD_SYNC_GRACE_S"
"""How long the offline store adds a syncing connection to messages routed before it
registered; longer than any routed message waits for the store."""
SYNC_GAP_WAIT_S = "SWITCHBOARD_SYNC_GAP_WAIT_S"
"""How long a gateway holds an out-of-order live copy for the missing ``seq`` before it asks
for a sync window."""
SYNC_WINDOW = "SWITCHBOARD_SYNC_WINDOW"
"""Messages a connection may leave unacknowledged while it syncs (until ``synced``), in place
of ``SWITCHBOARD_MAX_UNACKED_PER_CONNECTION``; at most half of ``SWITCHBOARD_OUTBOX_FRAMES``."""

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def text(environ: Mapping[str, str], name: str, default: str | None = None) -> str:
    """Return the variable's value or ``default``; unset without a default is an error."""
    value = environ.get(name, default)
    if value is None or value == "":
        if default is not None:
            return default
        raise SettingsError(f"{name} must be set")
    return value


def secret(
    environ: Mapping[str, str],
    name: str,
    min_length: int = 16,
    *,
    allow_placeholder: bool = False,
) -> str:
    """Return a required secret; errors say what is wrong with it, never what it is.

    A public placeholder (``proto.placeholders``) is refused unless ``allow_placeholder`` (the
    development flag, ``SWITCHBOARD_DEVELOPMENT=on``).
    """
    value = environ.get(name, "")
    if not value:
        raise SettingsError(
            f"{name} must be set (a secret of at least {min_length} characters)"
        )
    if len(value) < min_length:
        raise SettingsError(f"{name} must be at least {min_length} characters long")
    if not allow_placeholder and is_placeholder(value):
        raise SettingsError(
            f"{name} is a public placeholder: set a random secret "
            f"(openssl rand -hex 32), or {DEVELOPMENT}=on for local development only"
        )
    return value


def url(environ: Mapping[str, str], name: str, default: str) -> str:
    """Return a dependency's URL or DSN; one whose password is a public placeholder (the
    ``CHANGE-ME`` of ``k8s/base/secret.yaml``) is refused unless ``SWITCHBOARD_DEVELOPMENT=on``."""
    value = text(environ, name, default)
    try:
        password = urlsplit(value).password
    except ValueError:
        password = None  # the connection's own error names what is wrong with it
    if password and is_placeholder(password) and not is_development(environ):
        raise SettingsError(
            f"{name} holds a public placeholder password: set the real one, "
            f"or {DEVELOPMENT}=on for local development only"
        )
    return value


def is_development(environ: Mapping[str, str]) -> bool:
    """``SWITCHBOARD_DEVELOPMENT``: ``on`` or ``off`` (the default)."""
    return choice(environ, DEVELOPMENT, ("on", "off"), "off") == "on"


def switch(environ: Mapping[str, str], name: str, default: bool = False) -> bool:
    """Return a yes-or-no variable: ``true`` or ``on``, ``false`` or ``off``; unset: ``default``."""
    raw = environ.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("true", "on"):
        return True
    if raw in ("false", "off"):
        return False
    raise SettingsError(f"{name} must be true or false, got {environ[name]!r}")


def text_list(environ: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Return a comma-separated list without blanks; unset: empty."""
    return tuple(
        item.strip() for item in environ.get(name, "").split(",") if item.strip()
    )


def host_ports(environ: Mapping[str, str], name: str) -> tuple[tuple[str, int], ...]:
    """Return a comma-separated list of ``host:port`` as pairs; unset: empty."""
    pairs = []
    for item in text_list(environ, name):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(f"{name} must be host:port items separated by commas")
        pairs.append((host.strip("[]"), int(port)))
    return tuple(pairs)


def integer(
    environ: Mapping[str, str],
    name: str,
    default: int,
    minimum: int = 0,
    maximum: int | None = None,
) -> int:
    """Return an integer variable within ``[minimum, maximum]``."""
    raw = environ.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        upper = "" if maximum is None else f" and at most {maximum}"
        raise SettingsError(f"{name} must be at least {minimum}{upper}, got {value}")
    return value


def seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    """Return a positive number of seconds."""
    return _positive(environ, name, default, "a number of seconds")


def _positive(
    environ: Mapping[str, str], name: str, default: float, what: str
) -> float:
    """A positive, finite float; errors say ``what`` was expected ("a number of seconds")."""
    raw = environ.get(name, "")
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be {what}, got {raw!r}") from None
    if not (value > 0 and math.isfinite(value)):
        positive = what.replace("a number", "a positive, finite number", 1)
        raise SettingsError(f"{name} must be {positive}, got {raw!r}")
    return value


def non_negative(
    environ: Mapping[str, str], name: str, default: float, what: str
) -> float:
    """A finite float >= 0; errors say ``what`` was expected ("a number of days, 0: ...")."""
    raw = environ.get(name, "")
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be {what}, got {raw!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise SettingsError(f"{name} must be {what}, at least 0, got {raw!r}")
    return value


def choice(
    environ: Mapping[str, str], name: str, choices: tuple[str, ...], default: str
) -> str:
    """Return one of ``choices``."""
    value = environ.get(name, "") or default
    if value not in choices:
        raise SettingsError(
            f"{name} must be one of {', '.join(choices)}, got {value!r}"
        )
    return value


def location(url: str) -> str:
    """Where a URL or DSN points (``host:port``, or a socket path), without its credentials.

    For the one-line startup errors, which say where a dependency was looked for but never
    carry a user name or a password.
    """
    try:
        parts = urlsplit(url)
        hosts = parts.netloc.rpartition("@")[2]
        if "," in hosts:  # several hosts (libpq's multi-host DSN): all of them
            return hosts
        port = parts.port
    except ValueError:
        return "an unparsable URL"
    if parts.hostname is None:
        return parts.path or "an unparsable URL"
    return parts.hostname if port is None else f"{parts.hostname}:{port}"


def seconds_between(
    environ: Mapping[str, str],
    name: str,
    default: float,
    minimum: float,
    maximum: float,
) -> float:
    """Return a number of seconds within ``[minimum, maximum]`` (0 may be one)."""
    raw = environ.get(name, "")
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(
            f"{name} must be a number of seconds, got {raw!r}"
        ) from None
    if not minimum <= value <= maximum:  # NaN compares false: refused as well
        raise SettingsError(
            f"{name} must be between {minimum:g} and {maximum:g} seconds, got {raw!r}"
        )
    return value


def rate(environ: Mapping[str, str], name: str, default: float) -> float:
    """Return a positive, finite rate per second."""
    return _positive(environ, name, default, "a number per second")


def rate_or_off(environ: Mapping[str, str], name: str, default: float) -> float:
    """Return a rate per second that is positive and finite, or 0 (the limit is off)."""
    raw = environ.get(name, "")
    try:
        if raw != "" and float(raw) == 0:
            return 0.0
    except ValueError:
        pass  # _positive's error names the variable
    return _positive(environ, name, default, "a number per second (0: off)")
