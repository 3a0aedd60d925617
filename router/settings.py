"""The router's settings, read once from the environment by ``Settings.from_env``.

The fields every service shares, and their readers, are in ``runtime/settings.py``.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proto import env
from proto.errors import SettingsError
from proto.limits import PresencePolicy
from runtime import settings as shared
from runtime.settings import ServiceSettings


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings(ServiceSettings):
    redis_url: str
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    """Where the Redis Sentinels listen; empty: ``redis_url`` is the server itself."""
    redis_master: str = ""
    """The master's name at the Sentinels (with ``redis_sentinels`` only)."""
    redis_cluster: bool = False
    """Redis is a Redis Cluster, ``redis_url`` one of its nodes (a seed)."""
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
    redis_timeout_s: float
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
    retry_backoff_max_s: float = 5.0
    """Longest pause between two attempts at a batch that failed as a whole."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        """Read every setting; raises ``SettingsError`` naming the variable to fix."""
        return cls(
            **shared.service_fields(environ),
            retry_backoff_max_s=shared.retry_backoff_max_s(environ),
            redis_url=env.url(environ, env.REDIS_URL, env.DEFAULT_REDIS_URL),
            **redis_topology_fields(environ),
            batch_max=env.integer(environ, env.BATCH_MAX, default=500, minimum=1),
            dedup_ttl_s=env.integer(environ, env.DEDUP_TTL_S, default=600, minimum=1),
            gateway_ttl_s=env.seconds(environ, env.GATEWAY_TTL_S, default=15.0),
            heartbeat_interval_s=env.seconds(
                environ, env.HEARTBEAT_INTERVAL_S, default=5.0
            ),
            presence_debounce_s=env.seconds(
                environ, env.PRESENCE_DEBOUNCE_S, default=2.0
            ),
            redis_timeout_s=env.seconds(environ, env.REDIS_TIMEOUT_S, default=2.0),
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
        )


def redis_topology_fields(environ: Mapping[str, str]) -> dict[str, Any]:
    """``SWITCHBOARD_REDIS_SENTINELS`` and ``SWITCHBOARD_REDIS_MASTER``: both or neither;
    ``SWITCHBOARD_REDIS_CLUSTER``: not with them (a Redis Cluster fails over by itself)."""
    sentinels = env.host_ports(environ, env.REDIS_SENTINELS)
    master = environ.get(env.REDIS_MASTER, "")
    if bool(sentinels) != bool(master):
        raise SettingsError(
            f"{env.REDIS_SENTINELS} and {env.REDIS_MASTER} go together: "
            "set both (Redis through Sentinel) or neither"
        )
    is_cluster = env.switch(environ, env.REDIS_CLUSTER)
    if is_cluster and sentinels:
        raise SettingsError(
            f"{env.REDIS_CLUSTER}=true and {env.REDIS_SENTINELS} exclude each other: "
            "a Redis Cluster fails over without Sentinels"
        )
    return {
        "redis_sentinels": sentinels,
        "redis_master": master,
        "redis_cluster": is_cluster,
    }
