"""Presence in Redis: which conn_ids a uid holds on which gateway, gateway liveness, dedup.

Owns every Redis command of the router: one pipeline per batch, and the sweep of dead
gateways. Routing decisions live in routing.py; this module only reads and writes.
Keys are described in docs/architecture.md ("Presence in Redis").
"""

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from types import MappingProxyType
from typing import Any, cast

import redis.asyncio as redis
import structlog
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from proto.envelopes import (
    ConnClosed,
    ConnOpened,
    GatewayStopped,
    Heartbeat,
    Outgoing,
    Saved,
)
from proto.errors import DependencyUnavailable
from proto.names import Names
from router import routing
from router.routing import Connection, Inbound, Lookup
from router.settings import Settings, location

log = structlog.get_logger()

SWEEP_LOCK_S = 30
"""Lifetime of a sweep lock: a router that dies mid-sweep blocks others this long."""
REDIS_HINT = "start it with: redis-server --daemonize yes"

# HDEL presence(uid) conn_id, but only while that field still names this gateway. A
# conn_id is made by one gateway, so the field should never name another; the check
# keeps a sweep from removing anything a later writer put there all the same.
_HDEL_IF_GATEWAY = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


def now_ms() -> int:
    """The current Unix time in milliseconds: the router's clock for heartbeats."""
    return time.time_ns() // 1_000_000


@asynccontextmanager
async def open_presence(settings: Settings) -> AsyncIterator["Presence"]:
    """Connect to Redis and check that it answers; close on exit.

    Raises:
        DependencyUnavailable: Redis does not answer within the connect timeout.
    """
    client = redis.Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_connect_timeout=settings.connect_timeout_s,
        # No per-reply timer (it costs one timer per reply, 1000 per batch): every
        # call below runs under one deadline, see Presence.command_timeout_s.
        socket_timeout=None,
    )
    try:
        try:
            async with asyncio.timeout(settings.connect_timeout_s):
                await client.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            where = location(settings.redis_url)
            raise DependencyUnavailable("Redis", where, REDIS_HINT) from exc
        # Redis answers a batch's pipeline in milliseconds; one that takes longer than
        # SWITCHBOARD_REDIS_TIMEOUT_S means Redis is gone.
        yield Presence(
            client, settings.names, settings.dedup_ttl_s, settings.redis_timeout_s
        )
    finally:
        await client.aclose()


class Presence:
    """Reads and writes the router's Redis keys; mirrors the gateways' heartbeats."""

    def __init__(
        self,
        client: "redis.Redis",
        names: Names,
        dedup_ttl_s: int,
        command_timeout_s: float,
    ) -> None:
        self._client = client
        self._names = names
        self._dedup_ttl_s = dedup_ttl_s
        self.command_timeout_s = command_timeout_s
        """Deadline of each Redis round trip (a pipeline counts as one)."""
        # Mirror of <ns>:gateways (gateway_id -> last heartbeat, ms): read by the
        # sweeper, updated by the batches that write heartbeats, so that routing needs
        # no Redis round trip to tell a dead gateway.
        self._last_seen_ms: dict[str, int] = {}

    @property
    def last_seen_ms(self) -> Mapping[str, int]:
        return MappingProxyType(self._last_seen_ms)

    async def exchange_batch(
        self, batch: Sequence[Inbound], at_ms: int
    ) -> list[Lookup]:
        """Write the batch's presence changes and read what routing needs, in one pipeline.

        Commands go in batch order, so each envelope sees the writes of the envelopes
        before it (a ``send`` after an ``opened`` finds the new connection).
        """
        pipeline = self._client.pipeline(transaction=False)
        counts = [self._queue_commands(pipeline, envelope, at_ms) for envelope in batch]
        async with asyncio.timeout(self.command_timeout_s):
            replies: list[Any] = await pipeline.execute()
        lookups = []
        start = 0
        for envelope, count in zip(batch, counts, strict=True):
            lookups.append(self._read_lookup(envelope, replies[start : start + count]))
            start += count
            if isinstance(envelope, ConnOpened | Heartbeat):
                self._last_seen_ms[envelope.gateway_id] = at_ms
        return lookups

    def _queue_commands(
        self, pipeline: "Pipeline", envelope: Inbound, at_ms: int
    ) -> int:
        """Queue one envelope's commands; return how many replies they will give."""
        names = self._names
        match envelope:
            case ConnOpened(uid=uid, conn_id=conn_id, gateway_id=gateway_id):
                pipeline.hset(names.presence_key(uid), conn_id, gateway_id)
                pipeline.hset(names.gateway_key(gateway_id), conn_id, uid)
                pipeline.zadd(names.gateways_key, {gateway_id: at_ms})
                return 3
            case ConnClosed(uid=uid, conn_id=conn_id, gateway_id=gateway_id):
                pipeline.hdel(names.presence_key(uid), conn_id)
                pipeline.hdel(names.gateway_key(gateway_id), conn_id)
                return 2
            case Outgoing():
                # SET NX GET (Redis 7): sets the key when absent and returns what was
                # there, so one command both claims the client_id and tells a retry.
                key = names.dedup_key(envelope.sender, envelope.client_id)
                pipeline.set(key, envelope.mid, nx=True, get=True, ex=self._dedup_ttl_s)
                pipeline.hgetall(names.presence_key(envelope.to))
                return 2
            case Heartbeat(gateway_id=gateway_id):
                pipeline.zadd(names.gateways_key, {gateway_id: at_ms})
                return 1
            case Saved(uids=uids):
                for saved in uids:
                    pipeline.hgetall(names.presence_key(saved.uid))
                return len(uids)
            case GatewayStopped():
                return 0  # swept after the batch's publishes, see sweep_gateway

    @staticmethod
    def _read_lookup(envelope: Inbound, replies: list[Any]) -> Lookup:
        match envelope:
            case Outgoing():
                claimed_mid, connections = replies
                return Lookup((_connections(connections),), claimed_mid)
            case Saved():
                return Lookup(tuple(_connections(reply) for reply in replies))
            case _:
                return routing.NO_LOOKUP

    async def refresh_gateways(self) -> Mapping[str, int]:
        """Read every gateway's last heartbeat into the mirror."""
        async with asyncio.timeout(self.command_timeout_s):
            reply = await self._client.zrange(
                self._names.gateways_key, 0, -1, withscores=True, score_cast_func=int
            )
        # withscores, int scores and decoded responses make it (member, score) pairs
        pairs = cast(list[tuple[str, int]], reply)
        # A heartbeat that a batch wrote while this read was on its way stays.
        seen = self._last_seen_ms
        self._last_seen_ms = {gid: max(ms, seen.get(gid, ms)) for gid, ms in pairs}
        return self.last_seen_ms

    async def sweep_dead_gateways(self, gateway_ttl_ms: int) -> None:
        """Refresh the heartbeat mirror, then sweep every gateway found dead."""
        at_ms = now_ms()
        last_seen_ms = await self.refresh_gateways()
        for gateway_id in routing.dead_gateways(last_seen_ms, at_ms, gateway_ttl_ms):
            await self.sweep_gateway(gateway_id, stale_before_ms=at_ms - gateway_ttl_ms)

    async def sweep_forever(self, interval_s: float, gateway_ttl_ms: int) -> None:
        """Sweep dead gateways every ``interval_s``; a failed round is logged and retried."""
        while True:
            try:
                await self.sweep_dead_gateways(gateway_ttl_ms)
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("sweep_failed", error=repr(exc))
            except Exception:
                log.exception("sweep_failed")
            await asyncio.sleep(interval_s)  # a schedule, not a synchronisation

    async def sweep_gateway(self, gateway_id: str, stale_before_ms: int | None) -> None:
        """Remove a gateway's connections from presence, then its own keys.

        Args:
            gateway_id: the gateway to sweep.
            stale_before_ms: sweep only if its last heartbeat is still older than this
                (it may have come back since it was found dead); None sweeps anyway
                (the gateway said it stopped).
        """
        lock_key = self._names.sweep_lock_key(gateway_id)
        # Several routers find the same dead gateway: one sweeps it.
        async with asyncio.timeout(self.command_timeout_s):
            locked = await self._client.set(lock_key, "1", nx=True, ex=SWEEP_LOCK_S)
        if not locked:
            return
        try:
            async with asyncio.timeout(self.command_timeout_s):
                swept = await self._remove_gateway(gateway_id, stale_before_ms)
        finally:
            async with asyncio.timeout(self.command_timeout_s):
                await self._client.delete(lock_key)
        if swept is not None:
            self._last_seen_ms.pop(gateway_id, None)
            log.info("gateway_swept", gateway_id=gateway_id, connections=swept)

    async def _remove_gateway(
        self, gateway_id: str, stale_before_ms: int | None
    ) -> int | None:
        """Sweep under the lock; return how many connections went, None if none had to."""
        names = self._names
        pipeline = self._client.pipeline(transaction=False)
        pipeline.zscore(names.gateways_key, gateway_id)
        pipeline.hgetall(names.gateway_key(gateway_id))
        score, connections = await pipeline.execute()
        if stale_before_ms is not None and (score is None or score >= stale_before_ms):
            return None  # swept by another router already, or alive again
        pipeline = self._client.pipeline(transaction=False)
        for conn_id, uid in connections.items():
            pipeline.eval(
                _HDEL_IF_GATEWAY, 1, names.presence_key(uid), conn_id, gateway_id
            )
        pipeline.delete(names.gateway_key(gateway_id))
        pipeline.zrem(names.gateways_key, gateway_id)
        await pipeline.execute()
        return len(connections)


def _connections(presence: Mapping[str, str]) -> tuple[Connection, ...]:
    """The connections of one ``<ns>:presence:<uid>`` hash (conn_id -> gateway_id)."""
    return tuple(
        Connection(conn_id, gateway_id) for conn_id, gateway_id in presence.items()
    )
