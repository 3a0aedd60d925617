"""Presence in Redis: which conn_ids a uid holds on which gateway, gateway liveness,
dedup, groups, room counts and the going-offline debounce set.

Owns every Redis command of the router: one pipeline per batch (plus one follow-up
pipeline for a batch with group messages, and one for kicked connections), the sweep
of dead gateways and the due offline announcements. The batch's pipeline also counts
each uid's frames for the rate per uid across gateways (``routing.UidRate``) and reads
what the presence policy needs (the groups of the asker and of the uids asked about).
Routing decisions live in routing.py; this module only reads and writes. Keys are described in
docs/architecture.md ("Presence in Redis") and proto/names.py.
"""

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, cast

import redis.asyncio as redis
import structlog
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from proto.env import location
from proto.envelopes import (
    ApiBroadcast,
    ApiConnections,
    ApiGroupMembers,
    ApiKick,
    ApiPresence,
    ApiRoomCount,
    ApiSend,
    ConnClosed,
    ConnOpened,
    GatewayStopped,
    Heartbeat,
    Outgoing,
    PresenceAsked,
    RoomJoined,
    RoomLeft,
    Saved,
)
from proto.errors import DependencyUnavailable
from proto.limits import PresencePolicy
from proto.names import Names
from router import routing
from router.routing import Call, Connection, Inbound, Lookup, Refused, Removal
from router.settings import Settings

log = structlog.get_logger()

SWEEP_LOCK_S = 30
"""Lifetime of a sweep lock: a router that dies mid-sweep blocks others this long."""
DUE_OFFLINE_PAGE = 500
"""Most due uids taken from the going-offline set in one round."""
REDIS_HINT = "start it with: redis-server --daemonize yes"

# Register a connection and tell, atomically, whether it is the uid's first one and,
# if so, whether the uid was only going offline (a flap: no event either way). A uid
# holding ARGV[4] connections already (across all gateways) gets no more: nothing is
# written and the third value is 1 (ARGV[4] = 0: no limit, for re-announcements).
# KEYS: presence(uid), going-offline. ARGV: conn_id, gateway_id, uid, max_connections.
_OPEN_CONNECTION = """
local limit = tonumber(ARGV[4])
if limit > 0 and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
    and redis.call('HLEN', KEYS[1]) >= limit then
  return {0, 0, 1}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('HLEN', KEYS[1]) ~= 1 then
  return {0, 0, 0}
end
return {1, redis.call('ZREM', KEYS[2], ARGV[3]), 0}
"""

# Remove a connection: HDEL presence(uid) conn_id, but only while that field still names
# this gateway (a conn_id is made by one gateway, so it should never name another; the
# check keeps a sweep from removing anything a later writer put there all the same).
# When it was the uid's last connection, the uid is going offline, due at ARGV[4].
# KEYS: presence(uid), gateway(gateway_id), going-offline.
# ARGV: conn_id, gateway_id, uid, due_ms.
_REMOVE_CONNECTION = """
local removed = 0
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  removed = redis.call('HDEL', KEYS[1], ARGV[1])
  if redis.call('HLEN', KEYS[1]) == 0 then
    redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
  end
end
redis.call('HDEL', KEYS[2], ARGV[1])
return removed
"""

# A connection left a room: one fewer for its gateway; a gateway with none left is no
# longer in the room (and the room no longer in the gateway's list).
# KEYS: room(room), gateway-rooms(gateway_id). ARGV: gateway_id, room.
# Room membership: KEYS = room_members_key(room, gateway), room_key(room),
# gateway_rooms_key(gateway); ARGV = conn_id, gateway_id, room. The count in the room's hash
# is the size of the members' set, so a join or a leave handled twice changes nothing.
_JOIN_ROOM = """
redis.call('SADD', KEYS[1], ARGV[1])
local count = redis.call('SCARD', KEYS[1])
redis.call('HSET', KEYS[2], ARGV[2], count)
redis.call('SADD', KEYS[3], ARGV[3])
return count
"""
_LEAVE_ROOM = """
redis.call('SREM', KEYS[1], ARGV[1])
local count = redis.call('SCARD', KEYS[1])
if count == 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
  redis.call('SREM', KEYS[3], ARGV[3])
else
  redis.call('HSET', KEYS[2], ARGV[2], count)
end
return count
"""

# Claim a client id for a mid, or tell the mid that claimed it first. Ids are remembered per
# uid (per backend sender for api.send) in one hash per dedup window of SWITCHBOARD_DEDUP_TTL_S:
# the hash of the current window and of the one before are read, the current one written, and
# each expires when the window after it ends. So a uid holds at most two dedup keys whatever its
# rate (a key per id cost ~600,000 keys per uid at full rate), and a retry is recognised when it
# comes within one TTL of the first frame (at most two TTLs; later it counts as new).
# KEYS: this window's hash, the previous window's. ARGV: client_id, mid, expire_at_ms.
_CLAIM_CLIENT_ID = """
local first = redis.call('HGET', KEYS[1], ARGV[1]) or redis.call('HGET', KEYS[2], ARGV[1])
if first then
  return first
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return false
"""

ReadLookup = Callable[[list[Any]], Lookup]


def now_ms() -> int:
    """The current Unix time in milliseconds: the router's clock."""
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
            client,
            settings.names,
            settings.dedup_ttl_s,
            settings.redis_timeout_s,
            debounce_ms=round(settings.presence_debounce_s * 1000),
            max_connections_per_uid=settings.max_connections_per_uid,
            presence_policy=settings.presence_policy,
            uid_rate=routing.uid_rate(
                settings.rate_limit_per_uid_per_s, settings.rate_limit_per_uid_burst
            ),
        )
    finally:
        await client.aclose()


@dataclass(frozen=True, slots=True)
class _Queued:
    """The replies one envelope's commands will give, and how to read them."""

    count: int
    read: ReadLookup


def _no_lookup(replies: list[Any]) -> Lookup:
    return routing.NO_LOOKUP


_WRITES_ONLY = _Queued(0, _no_lookup)


class Presence:
    """Reads and writes the router's Redis keys; mirrors the gateways' heartbeats."""

    def __init__(
        self,
        client: "redis.Redis",
        names: Names,
        dedup_ttl_s: int,
        command_timeout_s: float,
        debounce_ms: int,
        max_connections_per_uid: int = 0,
        presence_policy: PresencePolicy = PresencePolicy.EVERYONE,
        uid_rate: routing.UidRate | None = None,
    ) -> None:
        self._client = client
        self._names = names
        self._dedup_ttl_s = dedup_ttl_s
        self.command_timeout_s = command_timeout_s
        """Deadline of each Redis round trip (a pipeline counts as one)."""
        self._debounce_ms = debounce_ms
        self._max_connections_per_uid = max_connections_per_uid
        """Connections one uid may hold across all gateways; 0: no limit."""
        self._presence_policy = presence_policy
        self._uid_rate = uid_rate
        """The rate per uid across gateways; None: no limit."""
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
        """Write the batch's presence changes and read what routing needs.

        One pipeline, commands in batch order, so each envelope sees the writes of
        the envelopes before it (a ``send`` after an ``opened`` finds the new
        connection). A batch with group messages takes a second pipeline: the
        members' connections.
        """
        pipeline = self._client.pipeline(transaction=False)
        queued = [self._queue_commands(pipeline, envelope, at_ms) for envelope in batch]
        costs = routing.uid_costs(batch) if self._uid_rate is not None else {}
        self._queue_rates(pipeline, costs, at_ms)
        reads_gateways = any(routing.needs_gateways(envelope) for envelope in batch)
        if reads_gateways:
            pipeline.zrange(
                self._names.gateways_key, 0, -1, withscores=True, score_cast_func=int
            )
        async with asyncio.timeout(self.command_timeout_s):
            replies: list[Any] = await pipeline.execute()
        lookups = []
        start = 0
        for envelope, pending in zip(batch, queued, strict=True):
            lookups.append(pending.read(replies[start : start + pending.count]))
            start += pending.count
            if isinstance(envelope, ConnOpened | Heartbeat):
                self._last_seen_ms[envelope.gateway_id] = at_ms
        if self._uid_rate is not None:
            for (cost, index), count in zip(
                costs.values(), replies[start : start + 2 * len(costs) : 2], strict=True
            ):
                throttle_ms = routing.throttle_for_ms(
                    int(count), cost, self._uid_rate, at_ms
                )
                if throttle_ms:
                    lookups[index] = replace(lookups[index], throttle_ms=throttle_ms)
        if reads_gateways:
            self._mirror_gateways(cast(list[tuple[str, int]], replies[-1]))
        return await self._follow_up(batch, lookups, at_ms)

    def _queue_commands(
        self, pipeline: "Pipeline", envelope: Inbound, at_ms: int
    ) -> _Queued:
        """Queue one envelope's commands; return how to read their replies."""
        names = self._names
        match envelope:
            case ConnOpened(uid=uid, conn_id=conn_id, gateway_id=gateway_id):
                pipeline.eval(
                    _OPEN_CONNECTION,
                    2,
                    names.presence_key(uid),
                    names.going_offline_key,
                    conn_id,
                    gateway_id,
                    uid,
                    0 if envelope.reannounce else self._max_connections_per_uid,
                )
                pipeline.hset(names.gateway_key(gateway_id), conn_id, uid)
                pipeline.zadd(names.gateways_key, {gateway_id: at_ms})
                return _Queued(3, _read_opened)
            case ConnClosed(uid=uid, conn_id=conn_id, gateway_id=gateway_id):
                self._queue_removal(pipeline, uid, conn_id, gateway_id, at_ms)
                for room in envelope.rooms:
                    self._queue_room(pipeline, _LEAVE_ROOM, gateway_id, room, conn_id)
                return _Queued(1 + len(envelope.rooms), _no_lookup)
            case RoomJoined(gateway_id=gateway_id, room=room, conn_id=conn_id):
                self._queue_room(pipeline, _JOIN_ROOM, gateway_id, room, conn_id)
                return _Queued(1, _no_lookup)
            case RoomLeft(gateway_id=gateway_id, room=room, conn_id=conn_id):
                self._queue_room(pipeline, _LEAVE_ROOM, gateway_id, room, conn_id)
                return _Queued(1, _no_lookup)
            case Outgoing():
                return self._queue_message(pipeline, envelope, at_ms, True, True)
            case PresenceAsked(uid=asker, uids=uids):
                match self._presence_policy:
                    case PresencePolicy.NOBODY:
                        return _WRITES_ONLY  # refused: nothing to read
                    case PresencePolicy.SHARED_GROUP:
                        return self._queue_visible(
                            pipeline, asker, routing.unique(uids)
                        )
                return self._queue_connections(pipeline, routing.unique(uids))
            case Heartbeat(gateway_id=gateway_id):
                pipeline.zadd(names.gateways_key, {gateway_id: at_ms})
                # Gone with an empty Redis or a sweep: see routing.should_reannounce. Only
                # read here; set by mark_known once the batch's deliveries are confirmed.
                pipeline.exists(names.gateway_known_key(gateway_id))
                return _Queued(2, _read_heartbeat)
            case Saved(uids=uids):
                return self._queue_connections(pipeline, [s.uid for s in uids])
            case GatewayStopped() | Refused():
                return _WRITES_ONLY  # a stopped gateway is swept after the publishes
            case Call():
                return self._queue_call(pipeline, envelope, at_ms)

    def _queue_call(self, pipeline: "Pipeline", call: Call, at_ms: int) -> _Queued:
        names = self._names
        match call.command:
            case ApiSend(id=client_id):
                outgoing = routing.outgoing_of(call)
                assert outgoing is not None  # a send makes a message
                return self._queue_message(
                    pipeline, outgoing, at_ms, client_id is not None, False
                )
            case ApiBroadcast():
                return _WRITES_ONLY  # the gateways are read once for the whole batch
            case ApiKick(uid=uid) | ApiConnections(uid=uid):
                return self._queue_connections(pipeline, [uid])
            case ApiPresence(uids=uids):
                return self._queue_connections(pipeline, routing.unique(uids))
            case ApiRoomCount(room=room):
                pipeline.hgetall(names.room_key(room))
                return _Queued(1, _read_room_counts)
            case ApiGroupMembers(group=group, uids=uids):
                if not uids:
                    return _WRITES_ONLY
                # Each member's groups too (the reverse), for the shared_group policy.
                if call.name == "group.add":
                    pipeline.sadd(names.group_key(group), *uids)
                    for uid in uids:
                        pipeline.sadd(names.member_of_key(uid), group)
                else:
                    pipeline.srem(names.group_key(group), *uids)
                    for uid in uids:
                        pipeline.srem(names.member_of_key(uid), group)
                return _Queued(1 + len(uids), _no_lookup)
            case _:
                raise ValueError(f"no presence commands for {call.name!r}")

    def _queue_message(
        self,
        pipeline: "Pipeline",
        outgoing: Outgoing,
        at_ms: int,
        dedup: bool,
        from_client: bool,
    ) -> _Queued:
        """Claim the client id (if any), and read what the addressing needs.

        ``from_client``: a client's frame (the sender's membership of a group is checked,
        its id claimed in the uid's keyspace), not a backend's ``api.send``.
        """
        names = self._names
        check_member = from_client
        count = 0
        if dedup:
            ttl_ms = self._dedup_ttl_s * 1000
            window = at_ms // ttl_ms
            dedup_key = names.dedup_key if from_client else names.api_dedup_key
            pipeline.eval(
                _CLAIM_CLIENT_ID,
                2,
                dedup_key(outgoing.sender, window),
                dedup_key(outgoing.sender, window - 1),
                outgoing.client_id,
                outgoing.mid,
                (window + 2) * ttl_ms,
            )
            count += 1
        if outgoing.to is not None:
            pipeline.hgetall(names.presence_key(outgoing.to))
            count += 1
        elif outgoing.group is not None:
            if check_member:
                pipeline.sismember(names.group_key(outgoing.group), outgoing.sender)
                count += 1
            pipeline.smembers(names.group_key(outgoing.group))
            count += 1
        elif outgoing.room is not None:
            pipeline.hgetall(names.room_key(outgoing.room))
            count += 1
        # a broadcast reads the gateways, once for the whole batch

        def read(replies: list[Any]) -> Lookup:
            rest = list(replies)
            claimed_mid = rest.pop(0) if dedup else None
            if outgoing.to is not None:
                return Lookup((_connections(rest[0]),), claimed_mid)
            if outgoing.group is not None:
                is_member = bool(rest.pop(0)) if check_member else True
                members = tuple(sorted(m for m in rest[0] if m != outgoing.sender))
                return Lookup(
                    claimed_mid=claimed_mid, is_member=is_member, members=members
                )
            if outgoing.room is not None:
                return Lookup(claimed_mid=claimed_mid, room_counts=_counts(rest[0]))
            return Lookup(claimed_mid=claimed_mid)

        return _Queued(count, read)

    def _queue_connections(self, pipeline: "Pipeline", uids: Sequence[str]) -> _Queued:
        """Read the connections of each uid, in order."""
        for uid in uids:
            pipeline.hgetall(self._names.presence_key(uid))
        return _Queued(len(uids), _read_connections)

    def _queue_visible(
        self, pipeline: "Pipeline", asker: str, uids: Sequence[str]
    ) -> _Queued:
        """Read the asker's groups, and each uid's connections and groups, in order."""
        names = self._names
        pipeline.smembers(names.member_of_key(asker))
        for uid in uids:
            pipeline.hgetall(names.presence_key(uid))
            pipeline.smembers(names.member_of_key(uid))

        def read(replies: list[Any]) -> Lookup:
            asker_groups = replies[0]
            return Lookup(
                tuple(_connections(reply) for reply in replies[1::2]),
                visible=tuple(
                    routing.sees_presence(asker, uid, asker_groups, groups)
                    for uid, groups in zip(uids, replies[2::2], strict=True)
                ),
            )

        return _Queued(1 + 2 * len(uids), read)

    def _queue_rates(
        self,
        pipeline: "Pipeline",
        costs: Mapping[str, tuple[int, int]],
        at_ms: int,
    ) -> None:
        """Add each uid's cost to its counter of the current window (two replies per uid)."""
        rate = self._uid_rate
        if rate is None:
            return
        window = at_ms // rate.window_ms
        for uid, (cost, _) in costs.items():
            key = self._names.rate_key(uid, window)
            pipeline.incrby(key, cost)
            # Kept one window more, for a batch whose clock is a little behind.
            pipeline.pexpire(key, 2 * rate.window_ms)

    def _queue_removal(
        self, pipeline: "Pipeline", uid: str, conn_id: str, gateway_id: str, at_ms: int
    ) -> None:
        """Remove a connection; a uid left without one is going offline (debounced)."""
        names = self._names
        pipeline.eval(
            _REMOVE_CONNECTION,
            3,
            names.presence_key(uid),
            names.gateway_key(gateway_id),
            names.going_offline_key,
            conn_id,
            gateway_id,
            uid,
            routing.offline_due_ms(at_ms, self._debounce_ms),
        )

    def _queue_room(
        self,
        pipeline: "Pipeline",
        script: str,
        gateway_id: str,
        room: str,
        conn_id: str,
    ) -> None:
        """Queue a join or a leave (``_JOIN_ROOM``, ``_LEAVE_ROOM``) of one connection."""
        names = self._names
        pipeline.eval(
            script,
            3,
            names.room_members_key(room, gateway_id),
            names.room_key(room),
            names.gateway_rooms_key(gateway_id),
            conn_id,
            gateway_id,
            room,
        )

    async def _follow_up(
        self, batch: Sequence[Inbound], lookups: list[Lookup], at_ms: int
    ) -> list[Lookup]:
        """Read the connections of the members of the batch's group messages, in one
        pipeline."""
        pipeline = self._client.pipeline(transaction=False)
        member_reads: list[tuple[int, int]] = []  # (envelope index, replies queued)
        count = 0
        for index, (envelope, lookup) in enumerate(zip(batch, lookups, strict=True)):
            if _needs_members(envelope, lookup):
                for uid in lookup.members:
                    pipeline.hgetall(self._names.presence_key(uid))
                member_reads.append((index, len(lookup.members)))
                count += len(lookup.members)
        if count == 0:
            return lookups
        async with asyncio.timeout(self.command_timeout_s):
            replies: list[Any] = await pipeline.execute()
        start = 0
        for index, size in member_reads:
            connections = tuple(_connections(r) for r in replies[start : start + size])
            lookups[index] = replace(lookups[index], connections=connections)
            start += size
        return lookups

    async def remove_connections(self, removals: Sequence[Removal], at_ms: int) -> None:
        """Take connections out of presence (kicked): one pipeline; a uid left without
        one is going offline (debounced)."""
        if not removals:
            return
        pipeline = self._client.pipeline(transaction=False)
        for removal in removals:
            connection = removal.connection
            self._queue_removal(
                pipeline, removal.uid, connection.conn_id, connection.gateway_id, at_ms
            )
        async with asyncio.timeout(self.command_timeout_s):
            await pipeline.execute()

    async def mark_known(self, gateway_ids: Sequence[str]) -> None:
        """Record gateways as known (``Plan.known``): their next heartbeats ask nothing."""
        if not gateway_ids:
            return
        pipeline = self._client.pipeline(transaction=False)
        for gateway_id in gateway_ids:
            pipeline.set(self._names.gateway_known_key(gateway_id), "1")
        async with asyncio.timeout(self.command_timeout_s):
            await pipeline.execute()

    def _mirror_gateways(self, pairs: Iterable[tuple[str, int]]) -> None:
        # A heartbeat that a batch wrote while this read was on its way stays.
        seen = self._last_seen_ms
        self._last_seen_ms = {gid: max(ms, seen.get(gid, ms)) for gid, ms in pairs}

    async def refresh_gateways(self) -> Mapping[str, int]:
        """Read every gateway's last heartbeat into the mirror."""
        async with asyncio.timeout(self.command_timeout_s):
            reply = await self._client.zrange(
                self._names.gateways_key, 0, -1, withscores=True, score_cast_func=int
            )
        # withscores, int scores and decoded responses make it (member, score) pairs
        self._mirror_gateways(cast(list[tuple[str, int]], reply))
        return self.last_seen_ms

    async def take_due_offline(self, at_ms: int) -> list[str]:
        """Take the uids whose debounce is over and that this router is to announce offline.

        Each due uid is removed from the going-offline set; the uids this router
        removed (no other router did, and no connection came back meanwhile) and that
        hold no connection now are returned (see routing.gone_offline).
        """
        names = self._names
        async with asyncio.timeout(self.command_timeout_s):
            reply = await self._client.zrangebyscore(
                names.going_offline_key, "-inf", at_ms, start=0, num=DUE_OFFLINE_PAGE
            )
        due = cast(list[str], reply)  # decoded responses, no scores
        if not due:
            return []
        # A transaction: a first connection opening between a ZREM and its HLEN would
        # otherwise be announced online and leave this uid's offline unannounced.
        pipeline = self._client.pipeline(transaction=True)
        for uid in due:
            pipeline.zrem(names.going_offline_key, uid)
            pipeline.hlen(names.presence_key(uid))
        async with asyncio.timeout(self.command_timeout_s):
            replies: list[int] = await pipeline.execute()
        return routing.gone_offline(
            due, [bool(r) for r in replies[0::2]], [int(r) for r in replies[1::2]]
        )

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
        """Remove a gateway's connections from presence and rooms, then its own keys.

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
            connections, rooms = swept
            log.info(
                "gateway_swept",
                gateway_id=gateway_id,
                connections=connections,
                rooms=rooms,
            )

    async def _remove_gateway(
        self, gateway_id: str, stale_before_ms: int | None
    ) -> tuple[int, int] | None:
        """Sweep under the lock; return how many connections and rooms went, None if
        none had to."""
        names = self._names
        pipeline = self._client.pipeline(transaction=False)
        pipeline.zscore(names.gateways_key, gateway_id)
        pipeline.hgetall(names.gateway_key(gateway_id))
        pipeline.smembers(names.gateway_rooms_key(gateway_id))
        score, connections, rooms = await pipeline.execute()
        if stale_before_ms is not None and (score is None or score >= stale_before_ms):
            return None  # swept by another router already, or alive again
        at_ms = now_ms()
        pipeline = self._client.pipeline(transaction=False)
        for conn_id, uid in connections.items():
            self._queue_removal(pipeline, uid, conn_id, gateway_id, at_ms)
        for room in rooms:
            pipeline.hdel(names.room_key(room), gateway_id)
            pipeline.delete(names.room_members_key(room, gateway_id))
        pipeline.delete(names.gateway_rooms_key(gateway_id))
        pipeline.delete(names.gateway_key(gateway_id))
        pipeline.delete(names.gateway_known_key(gateway_id))
        pipeline.zrem(names.gateways_key, gateway_id)
        await pipeline.execute()
        return len(connections), len(rooms)


def _needs_members(envelope: Inbound, lookup: Lookup) -> bool:
    """Whether a group message will be routed, and so needs its members' connections."""
    match envelope:
        case Outgoing(group=str()):
            outgoing: Outgoing | None = envelope
        case Call(command=ApiSend(group=str())):
            outgoing = routing.outgoing_of(envelope)
        case _:
            return False
    assert outgoing is not None
    claimed = lookup.claimed_mid
    is_retry = claimed is not None and claimed != outgoing.mid
    return lookup.is_member and not is_retry and bool(lookup.members)


def _read_opened(replies: list[Any]) -> Lookup:
    [is_first, has_flapped, is_refused], _, _ = replies
    return Lookup(
        is_first_connection=bool(is_first),
        has_flapped=bool(has_flapped),
        is_over_connection_limit=bool(is_refused),
    )


def _read_heartbeat(replies: list[Any]) -> Lookup:
    _, is_known = replies
    return Lookup(is_unknown_gateway=not is_known)


def _read_connections(replies: list[Any]) -> Lookup:
    return Lookup(tuple(_connections(reply) for reply in replies))


def _read_room_counts(replies: list[Any]) -> Lookup:
    return Lookup(room_counts=_counts(replies[0]))


def _counts(room: Mapping[str, str]) -> dict[str, int]:
    """A ``<ns>:room:<room>`` hash (gateway_id -> count) with its counts as ints."""
    return {gateway_id: int(count) for gateway_id, count in room.items()}


def _connections(presence: Mapping[str, str]) -> tuple[Connection, ...]:
    """The connections of one ``<ns>:presence:<uid>`` hash (conn_id -> gateway_id)."""
    return tuple(
        Connection(conn_id, gateway_id) for conn_id, gateway_id in presence.items()
    )
