"""The router's settings, read once from the environment by ``Settings.from_env``."""

import os
from collections.abc import Mapping
from dataclasses import dataclass

from proto import env
from proto.errors import SettingsError
from proto.limits import PresencePolicy
from proto.names import DEFAULT_NAMESPACE, Names
from proto.packing import DEFAULT_MAX_AMQP_MESSAGE_BYTES, MIN_MAX_AMQP_MESSAGE_BYTES
from proto.topology import QUEUE_TYPES

LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class Settings:
    amqp_url: str
    redis_url: str
    names: Names
    queue_type: str
    """Type of the shared queues this router declares (``quorum`` or ``classic``)."""
    prefetch: int
    """Unacknowledged messages RabbitMQ hands this router at once."""
    batch_max: int
    """Most envelopes routed with one Redis pipeline and one round of publishes."""
    dedup_ttl_s: int
    """How long a ``client_id`` keeps the mid of its first frame (client retries)."""
    gateway_ttl_s: float
    """A gateway without a heartbeat for this long is dead: its presence is swept."""
    heartbeat_interval_s: float
    """How often this router reads gateway liveness and sweeps dead gateways."""
    presence_debounce_s: float
    """How long a uid without connections waits before ``user.offline`` is published
    (a reconnection within it publishes neither event: a page reload)."""
    publish_timeout_s: float
    connect_timeout_s: float
    redis_timeout_s: float
    shutdown_timeout_s: float
    log_level: str
    metrics_port: int | None = None
    """Port of /livez, /readyz and /metrics; None: not served."""
    max_connections_per_uid: int = 20
    """Connections one uid may hold across all gateways; 0: no limit."""
    max_command_bytes: int = 1_048_576
    """Largest backend command body decoded; a larger one is refused with ``too_large``."""
    presence_policy: PresencePolicy = PresencePolicy.EVERYONE
    """Who may learn a uid's presence with a client ``presence`` frame (backends always)."""
    rate_limit_per_uid_per_s: float = 100.0
    """Frames per second one uid may send across all gateways, on average; 0: no limit."""
    rate_limit_per_uid_burst: int = 200
    """Frames one uid may send in one window of ``burst / rate`` seconds."""
    max_amqp_message_bytes: int = DEFAULT_MAX_AMQP_MESSAGE_BYTES
    """Largest delivery published; more items go in more messages."""
    retry_backoff_max_s: float = 5.0
    """Longest pause between two attempts at a batch that failed as a whole."""

    @property
    def namespace(self) -> str:
        return self.names.namespace

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        """Read every setting; raises ``SettingsError`` naming the variable to fix."""
        namespace = env.text(environ, env.NAMESPACE, default=DEFAULT_NAMESPACE)
        try:
            names = Names(namespace)
        except ValueError as exc:
            raise SettingsError(f"{env.NAMESPACE}: {exc}") from None
        return cls(
            amqp_url=env.text(environ, env.AMQP_URL, default=env.DEFAULT_AMQP_URL),
            redis_url=env.text(environ, env.REDIS_URL, default=env.DEFAULT_REDIS_URL),
            names=names,
            queue_type=env.choice(environ, env.QUEUE_TYPE, QUEUE_TYPES, "quorum"),
            prefetch=env.integer(environ, env.PREFETCH, default=1000, minimum=1),
            batch_max=env.integer(environ, env.BATCH_MAX, default=500, minimum=1),
            dedup_ttl_s=env.integer(environ, env.DEDUP_TTL_S, default=600, minimum=1),
            gateway_ttl_s=env.seconds(environ, env.GATEWAY_TTL_S, default=15.0),
            heartbeat_interval_s=env.seconds(
                environ, env.HEARTBEAT_INTERVAL_S, default=5.0
            ),
            presence_debounce_s=env.seconds(
                environ, env.PRESENCE_DEBOUNCE_S, default=2.0
            ),
            publish_timeout_s=env.seconds(environ, env.PUBLISH_TIMEOUT_S, default=5.0),
            connect_timeout_s=env.seconds(environ, env.CONNECT_TIMEOUT_S, default=5.0),
            redis_timeout_s=env.seconds(environ, env.REDIS_TIMEOUT_S, default=2.0),
            shutdown_timeout_s=env.seconds(
                environ, env.SHUTDOWN_TIMEOUT_S, default=10.0
            ),
            log_level=env.choice(environ, env.LOG_LEVEL, LOG_LEVELS, "info"),
            max_connections_per_uid=env.integer(
                environ, env.MAX_CONNECTIONS_PER_UID, default=20, minimum=0
            ),
            max_command_bytes=env.integer(
                environ, env.MAX_COMMAND_BYTES, default=1_048_576, minimum=1024
            ),
            presence_policy=PresencePolicy(
                env.choice(
                    environ,
                    env.PRESENCE_POLICY,
                    tuple(PresencePolicy),
                    PresencePolicy.EVERYONE,
                )
            ),
            rate_limit_per_uid_per_s=env.rate_or_off(
                environ, env.RATE_LIMIT_PER_UID_PER_S, default=100.0
            ),
            rate_limit_per_uid_burst=env.integer(
                environ, env.RATE_LIMIT_PER_UID_BURST, default=200, minimum=1
            ),
            max_amqp_message_bytes=env.integer(
                environ,
                env.MAX_AMQP_MESSAGE_BYTES,
                default=DEFAULT_MAX_AMQP_MESSAGE_BYTES,
                minimum=MIN_MAX_AMQP_MESSAGE_BYTES,
            ),
            retry_backoff_max_s=env.seconds(
                environ, env.RETRY_BACKOFF_MAX_S, default=5.0
            ),
            metrics_port=(
                env.integer(environ, env.METRICS_PORT, 0, maximum=65535)
                if environ.get(env.METRICS_PORT, "")
                else None
            ),
        )
