"""The settings every service reads alike: their fields, their readers and their defaults.

Each service's ``Settings`` extends ``ServiceSettings`` with its own fields, and fills the shared
ones in its ``from_env`` with ``service_fields`` (the readers below), so that a variable means
the same thing, with the same default and the same bounds, in every service. Errors name the
variable (``proto/env.py``).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypedDict

from proto import env
from proto.errors import SettingsError
from proto.names import DEFAULT_NAMESPACE, Names
from proto.packing import DEFAULT_MAX_AMQP_MESSAGE_BYTES, MIN_MAX_AMQP_MESSAGE_BYTES
from proto.topology import QUEUE_TYPES

LOG_LEVELS = ("debug", "info", "warning", "error")
EVENT_LOOPS = ("uvloop", "asyncio")
DEFAULT_EVENT_LOOP = "asyncio"
"""uvloop did not do consistently better in bench s1 (bench/README.md, "Event loop")."""
MAX_PREFETCH = 65535
"""AMQP's prefetch count is a 16-bit number."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceSettings:
    """The fields of every service's settings."""

    names: Names
    amqp_url: str
    queue_type: str
    """Type of the shared queues this service declares (``quorum`` or ``classic``)."""
    log_level: str
    prefetch: int
    """Unacknowledged messages RabbitMQ hands this service at once (per consumer)."""
    event_loop: str = DEFAULT_EVENT_LOOP
    """``uvloop`` or ``asyncio``: the loop ``runtime.startup.run_service`` runs the service on."""
    publish_timeout_s: float
    connect_timeout_s: float
    """Deadline of connecting to a dependency, and of each declaration on the broker."""
    shutdown_timeout_s: float
    metrics_port: int | None = None
    """Port of /livez, /readyz and /metrics; None: not served."""
    max_amqp_message_bytes: int = DEFAULT_MAX_AMQP_MESSAGE_BYTES
    """Largest AMQP message this service builds; more items go in more messages."""
    history: bool = True
    """``SWITCHBOARD_HISTORY``: the store keeps history and numbers inboxes (``proto/env.py``)."""

    @property
    def namespace(self) -> str:
        return self.names.namespace


class ServiceFields(TypedDict):
    """The values of ``ServiceSettings``' fields, as ``service_fields`` reads them."""

    names: Names
    amqp_url: str
    queue_type: str
    log_level: str
    prefetch: int
    event_loop: str
    publish_timeout_s: float
    connect_timeout_s: float
    shutdown_timeout_s: float
    metrics_port: int | None
    max_amqp_message_bytes: int
    history: bool


def service_fields(environ: Mapping[str, str]) -> ServiceFields:
    """Read the fields every service has; a service's ``from_env`` passes them on with ``**``."""
    return ServiceFields(
        names=names(environ),
        amqp_url=amqp_url(environ),
        queue_type=queue_type(environ),
        log_level=log_level(environ),
        prefetch=prefetch(environ),
        event_loop=event_loop(environ),
        publish_timeout_s=publish_timeout_s(environ),
        connect_timeout_s=connect_timeout_s(environ),
        shutdown_timeout_s=shutdown_timeout_s(environ),
        metrics_port=metrics_port(environ),
        max_amqp_message_bytes=max_amqp_message_bytes(environ),
        history=history(environ),
    )


def names(environ: Mapping[str, str]) -> Names:
    """The namespace's names (``SWITCHBOARD_NAMESPACE``)."""
    namespace = env.text(environ, env.NAMESPACE, DEFAULT_NAMESPACE)
    try:
        return Names(namespace)
    except ValueError as exc:
        raise SettingsError(f"{env.NAMESPACE}: {exc}") from None


def amqp_url(environ: Mapping[str, str]) -> str:
    return env.url(environ, env.AMQP_URL, env.DEFAULT_AMQP_URL)


def queue_type(environ: Mapping[str, str]) -> str:
    return env.choice(environ, env.QUEUE_TYPE, QUEUE_TYPES, "quorum")


def log_level(environ: Mapping[str, str]) -> str:
    return env.choice(environ, env.LOG_LEVEL, LOG_LEVELS, "info")


def event_loop(environ: Mapping[str, str]) -> str:
    return env.choice(environ, env.EVENT_LOOP, EVENT_LOOPS, DEFAULT_EVENT_LOOP)


def prefetch(environ: Mapping[str, str]) -> int:
    return env.integer(environ, env.PREFETCH, 1000, minimum=1, maximum=MAX_PREFETCH)


def publish_timeout_s(environ: Mapping[str, str]) -> float:
    return env.seconds(environ, env.PUBLISH_TIMEOUT_S, 5.0)


def connect_timeout_s(environ: Mapping[str, str]) -> float:
    return env.seconds(environ, env.CONNECT_TIMEOUT_S, 5.0)


def shutdown_timeout_s(environ: Mapping[str, str]) -> float:
    return env.seconds(environ, env.SHUTDOWN_TIMEOUT_S, 10.0)


def metrics_port(environ: Mapping[str, str]) -> int | None:
    """``SWITCHBOARD_METRICS_PORT``, or None when unset (no health and metrics endpoint)."""
    if not environ.get(env.METRICS_PORT, ""):
        return None
    return env.integer(environ, env.METRICS_PORT, 0, minimum=0, maximum=65535)


def max_amqp_message_bytes(environ: Mapping[str, str]) -> int:
    return env.integer(
        environ,
        env.MAX_AMQP_MESSAGE_BYTES,
        DEFAULT_MAX_AMQP_MESSAGE_BYTES,
        minimum=MIN_MAX_AMQP_MESSAGE_BYTES,
    )


def history(environ: Mapping[str, str]) -> bool:
    """``SWITCHBOARD_HISTORY``: ``on`` (the default) or ``off``."""
    return env.choice(environ, env.HISTORY, ("on", "off"), "on") == "on"


def retry_backoff_max_s(environ: Mapping[str, str]) -> float:
    """Longest pause between two attempts at a batch (services that consume batches)."""
    return env.seconds(environ, env.RETRY_BACKOFF_MAX_S, 5.0)
