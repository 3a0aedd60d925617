"""The router's Redis client: one server by URL, or the master that Redis Sentinel names.

With ``SWITCHBOARD_REDIS_SENTINELS`` the client asks the Sentinels where the master named
``SWITCHBOARD_REDIS_MASTER`` is before each new connection (redis-py's Sentinel support): after
a failover, a connection to the old master fails (or hears ``READONLY`` from it, now a replica)
and the next one goes to the new master. ``SWITCHBOARD_REDIS_URL`` then gives the database
number and the credentials only.
"""

from typing import Any

import redis.asyncio as redis
from redis.asyncio.connection import parse_url
from redis.asyncio.sentinel import Sentinel

from proto.env import location
from router.settings import Settings


def open_redis(
    settings: Settings,
    *,
    connect_timeout_s: float,
    reply_timeout_s: float | None,
    decode_responses: bool = False,
) -> "redis.Redis":
    """A client of the router's Redis (no connection is made before the first command)."""
    options: dict[str, Any] = {
        "socket_connect_timeout": connect_timeout_s,
        "socket_timeout": reply_timeout_s,
        "decode_responses": decode_responses,
    }
    if not settings.redis_sentinels:
        return redis.Redis.from_url(settings.redis_url, **options)
    # Credentials and database from the URL; where the master is, from the Sentinels.
    from_url = parse_url(settings.redis_url)
    for key in ("db", "username", "password"):
        if key in from_url:
            options[key] = from_url[key]
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(settings.redis_sentinels),
        sentinel_kwargs={
            "socket_connect_timeout": connect_timeout_s,
            "socket_timeout": connect_timeout_s,
        },
    )
    client: redis.Redis = sentinel.master_for(settings.redis_master, **options)
    return client


def redis_location(settings: Settings) -> str:
    """Where the router looks for Redis, without credentials (for startup errors)."""
    if not settings.redis_sentinels:
        return location(settings.redis_url)
    sentinels = ",".join(f"{host}:{port}" for host, port in settings.redis_sentinels)
    return f"master {settings.redis_master} at the Sentinels {sentinels}"
