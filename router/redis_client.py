"""The router's Redis client: one server by URL, the master that Redis Sentinel names, or a
Redis Cluster.

With ``SWITCHBOARD_REDIS_SENTINELS`` the client asks the Sentinels where the master named
``SWITCHBOARD_REDIS_MASTER`` is before each new connection (redis-py's Sentinel support): after
a failover, a connection to the old master fails (or hears ``READONLY`` from it, now a replica)
and the next one goes to the new master. ``SWITCHBOARD_REDIS_URL`` then gives the database
number and the credentials only.

With ``SWITCHBOARD_REDIS_CLUSTER=true``, ``SWITCHBOARD_REDIS_URL`` is one node of a Redis Cluster
(a seed, database 0): redis-py's cluster client learns every node and the slots each serves
from it, sends each command to the master of its key's slot, follows ``MOVED`` and ``ASK``
redirections (a resharding) and learns the slots again when a node fails (a failover). Every
script and transaction of the router touches one slot (proto/names.py, hash tags).
"""

from typing import Any

import redis.asyncio as redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.sentinel import Sentinel

from proto.env import location
from router.settings import Settings

RedisClient = redis.Redis | RedisCluster
"""A client of one server (or of the Sentinels' master), or of a Redis Cluster."""
RedisPipeline = Pipeline | ClusterPipeline
"""A pipeline of either: a Redis Cluster's sends each command to the node of its slot."""


def open_redis(
    settings: Settings,
    *,
    connect_timeout_s: float,
    reply_timeout_s: float | None,
    decode_responses: bool = False,
) -> RedisClient:
    """A client of the router's Redis (no connection is made before the first command)."""
    options: dict[str, Any] = {
        "socket_connect_timeout": connect_timeout_s,
        "socket_timeout": reply_timeout_s,
        "decode_responses": decode_responses,
    }
    if settings.redis_cluster:
        return RedisCluster.from_url(settings.redis_url, **options)
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
    if settings.redis_cluster:
        return f"the Redis Cluster of the node {location(settings.redis_url)}"
    if not settings.redis_sentinels:
        return location(settings.redis_url)
    sentinels = ",".join(f"{host}:{port}" for host, port in settings.redis_sentinels)
    return f"master {settings.redis_master} at the Sentinels {sentinels}"
