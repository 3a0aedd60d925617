"""Presence in Redis: which conn_ids a uid holds on which gateway, gateway liveness, dedup,
groups, room counts, rate counters and the going-offline debounce set.

Owns every Redis command of the router, and decides nothing: it runs the typed requests of
requests.py, a list of them in one pipeline (one round trip), and reads each one's replies
into its typed result. What to read and write is decided in lookups.py (a batch),
routing.py (what follows its confirms), liveness.py and debounce.py (the periodic work).
It also keeps a mirror of every gateway's last heartbeat, so that routing needs no round
trip to tell a dead gateway. The commands of the group requests are queued by group_redis.py,
those of the liveness requests (gateways, sweeps, the going-offline set) by liveness_redis.py.
Keys are described in docs/architecture.md ("Presence in Redis") and proto/names.py, the Lua
scripts in scripts.py.

The same requests run on one server (or the Sentinels' master) and on a Redis Cluster, with
the same scripts (scripts.py says how each stays in one slot). On a cluster, where a command
goes to the node of its key's slot, what a script cannot reach in another slot goes beside it:

* a claim reads its recipients' presence with ``HGETALL`` (on one server, in the script: one
  command per message);
* a removal, a join or a leave writes the gateway's keys with commands of their own, and a
  removal that leaves a uid going offline writes its going-offline entry in a second round
  trip, once the removal is answered (debounce.py says why); on one server, in the script;
* no transaction spans several requests (group_changes.py counts a rebuild page once its
  writes are answered).
"""

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from itertools import starmap
from types import MappingProxyType
from typing import Any

from redis.exceptions import RedisError

from proto.errors import DependencyUnavailable
from proto.names import Names
from router import scripts
from router.group_redis import queue_group_request
from router.liveness_redis import queue_liveness_request, room_entry
from router.observability import REDIS_BY_OPERATION
from router.redis_client import RedisClient, RedisPipeline, open_redis, redis_location
from router.requests import (
    AddCost,
    ApplyMembers,
    ClaimClientId,
    ClaimDueOffline,
    CountInRoom,
    CountOutOfRoom,
    CountPage,
    DropDueOffline,
    ForgetGateway,
    LockRebuild,
    LockSweep,
    MarkKnown,
    OpenConnection,
    ReadConnections,
    ReadDueOffline,
    ReadGatewayRecord,
    ReadGateways,
    ReadGroup,
    ReadGroupsLoaded,
    ReadRoom,
    ReadVisibility,
    RecordHeartbeat,
    RemoveConnection,
    Request,
    UnlockSweep,
)
from router.results import (
    WRITTEN,
    Claimed,
    Connections,
    Counted,
    GatewaysRead,
    GroupRead,
    HeartbeatRecorded,
    Opened,
    PresenceEntry,
    Result,
    RoomCounts,
    Visibility,
)
from router.settings import Settings
from runtime.metrics import observed

REDIS_HINT = "start it with: redis-server --daemonize yes"

Read = Callable[[list[Any]], Result]
"""Reads the replies of one request's commands, in order, into its result."""


def now_ms() -> int:
    """The current Unix time in milliseconds: the router's clock."""
    return time.time_ns() // 1_000_000


@asynccontextmanager
async def open_presence(settings: Settings) -> AsyncIterator["Presence"]:
    """Connect to Redis and check that it answers; close on exit.

    Raises:
        DependencyUnavailable: Redis does not answer within the connect timeout.
    """
    client = open_redis(
        settings,
        connect_timeout_s=settings.connect_timeout_s,
        # No per-reply timer (it costs one timer per reply, 1000 per batch): every
        # call below runs under one deadline, see Presence.command_timeout_s.
        reply_timeout_s=None,
        decode_responses=True,
    )
    try:
        try:
            async with asyncio.timeout(settings.connect_timeout_s):
                await client.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            where = redis_location(settings)
            raise DependencyUnavailable("Redis", where, REDIS_HINT) from exc
        # Redis answers a batch's pipeline in milliseconds; one that takes longer than
        # SWITCHBOARD_REDIS_TIMEOUT_S means Redis is gone.
        yield Presence(
            client,
            settings.names,
            settings.redis_timeout_s,
            is_cluster=settings.redis_cluster,
        )
    finally:
        await client.aclose()


class Presence:
    """Runs requests against the router's Redis keys; mirrors the gateways' heartbeats."""

    def __init__(
        self,
        client: RedisClient,
        names: Names,
        command_timeout_s: float,
        *,
        is_cluster: bool = False,
    ) -> None:
        self._client = client
        self._names = names
        self.command_timeout_s = command_timeout_s
        """Deadline of each Redis round trip (a pipeline counts as one)."""
        self.is_cluster = is_cluster
        """Redis is a Redis Cluster: no transaction spans several slots."""
        # Mirror of <ns>:gateways (gateway_id -> last heartbeat, ms): read by the
        # sweeper, updated by the batches that write heartbeats, so that routing needs
        # no Redis round trip to tell a dead gateway.
        self._last_seen_ms: dict[str, int] = {}

    @property
    def last_seen_ms(self) -> Mapping[str, int]:
        return MappingProxyType(self._last_seen_ms)

    async def execute(
        self,
        requests: Sequence[Request],
        *,
        transaction: bool = False,
        operation: str = "other",
    ) -> list[Result]:
        """Run the requests in one pipeline, in order, so that each sees the writes of the
        ones before it (on a Redis Cluster, the ones to its keys' slot: each node gets its
        commands in order); return one result per request, in the same order.

        ``transaction``: in MULTI/EXEC, so that no other client's command runs between
        them (one server only: a Redis Cluster has no transaction across slots). No
        request: no round trip. ``operation``: which of ``proto.metrics.REDIS_OPERATIONS``
        the round trip is observed as. On a Redis Cluster, the going-offline entries of the
        uids whose last connection a removal took go in a second round trip, once the first
        answered.

        Raises:
            ValueError: a transaction on a Redis Cluster.
        """
        if not requests:
            return []
        if transaction and self.is_cluster:
            raise ValueError("a Redis Cluster has no transaction across slots")
        pipeline = self._client.pipeline(transaction=transaction)
        spans: list[tuple[Read, int, int]] = []
        for request in requests:
            start = len(pipeline)
            read = self._queue(pipeline, request)
            spans.append((read, start, len(pipeline)))
        replies = await self._round_trip(pipeline, operation)
        results = [read(replies[start:end]) for read, start, end in spans]
        going_offline = [
            (request.uid, int(replies[start]))
            for request, (_, start, _) in zip(requests, spans, strict=True)
            if isinstance(request, RemoveConnection) and replies[start] is not None
        ]
        if going_offline:
            await self._mark_going_offline(going_offline, operation)
        for request, result in zip(requests, results, strict=True):
            if isinstance(request, OpenConnection | RecordHeartbeat):
                self._last_seen_ms[request.gateway_id] = request.seen_ms
            elif isinstance(result, GatewaysRead):
                self._mirror(result)
        return results

    async def refresh_gateways(self) -> Mapping[str, int]:
        """Read every gateway's last heartbeat into the mirror."""
        await self.execute([ReadGateways()], operation="gateways")
        return self.last_seen_ms

    def forget_gateway(self, gateway_id: str) -> None:
        """Drop a swept gateway from the mirror."""
        self._last_seen_ms.pop(gateway_id, None)

    def _mirror(self, read: GatewaysRead) -> None:
        """Mirror every gateway's heartbeat as read."""
        # A heartbeat that a batch wrote while this read was on its way stays.
        seen = self._last_seen_ms
        self._last_seen_ms = {
            gid: max(ms, seen.get(gid, ms)) for gid, ms in read.last_seen_ms.items()
        }

    async def _round_trip(self, pipeline: RedisPipeline, operation: str) -> list[Any]:
        """Send a pipeline and read its replies, under the deadline, observed."""
        histogram = REDIS_BY_OPERATION.get(operation, REDIS_BY_OPERATION["other"])
        with observed(histogram):
            async with asyncio.timeout(self.command_timeout_s):
                replies: list[Any] = await pipeline.execute()
        return replies

    async def _mark_going_offline(
        self, due_by_uid: Sequence[tuple[str, int]], operation: str
    ) -> None:
        """Write the going-offline entries of uids whose offline-due key removals found set
        (``scripts.MARK_GOING_OFFLINE``), after those removals were answered."""
        pipeline = self._client.pipeline(transaction=False)
        pipeline.eval(
            scripts.MARK_GOING_OFFLINE,
            1,
            self._names.going_offline_key,
            *(value for pair in due_by_uid for value in pair),
        )
        await self._round_trip(pipeline, operation)

    def _queue(self, pipeline: RedisPipeline, request: Request) -> Read:
        """Queue a request's commands; return how to read their replies."""
        names = self._names
        match request:
            # A batch makes a few requests per message: theirs are matched first.
            case ClaimClientId(sender, client_id, mid, window, expire_at_ms):
                dedup_key = (
                    names.api_dedup_key if request.from_backend else names.dedup_key
                )
                reads = request.reads
                # On one server the script reads the presence too: one command per
                # message. On a cluster those are other uids' slots: read beside it.
                inside = () if self.is_cluster else reads
                pipeline.eval(
                    scripts.CLAIM_CLIENT_ID,
                    2 + len(inside),
                    dedup_key(sender, window),
                    dedup_key(sender, window - 1),
                    *map(names.presence_key, inside),
                    client_id,
                    mid,
                    expire_at_ms,
                )
                if not self.is_cluster or not reads:
                    return lambda replies: _read_claimed(reads, replies[0])
                for uid in reads:
                    pipeline.hgetall(names.presence_key(uid))
                return lambda replies: _read_claimed_apart(reads, replies)
            case ReadConnections(uids=uids):
                for uid in uids:
                    pipeline.hgetall(names.presence_key(uid))
                return lambda replies: Connections(_by_uid(uids, replies))
            case ReadGroup(group=group, member=member):
                if member is not None:
                    pipeline.sismember(names.group_key(group), member)
                pipeline.smembers(names.group_key(group))
                return lambda replies: GroupRead(
                    is_member=bool(replies[0]) if member is not None else True,
                    members=frozenset(replies[-1]),
                )
            case ReadRoom(room=room):
                pipeline.hgetall(names.room_key(room))
                return _read_room
            case AddCost(uid=uid, window=window, cost=cost, expire_ms=expire_ms):
                key = names.rate_key(uid, window)
                pipeline.incrby(key, cost)
                pipeline.pexpire(key, expire_ms)
                return lambda replies: Counted(uid, int(replies[0]))
            case OpenConnection(uid, conn_id, gateway_id, max_connections, seen_ms):
                pipeline.eval(
                    scripts.OPEN_CONNECTION,
                    2,
                    names.presence_key(uid),
                    names.offline_due_key(uid),
                    conn_id,
                    gateway_id,
                    max_connections,
                )
                pipeline.hset(names.gateway_key(gateway_id), conn_id, uid)
                pipeline.zadd(names.gateways_key, {gateway_id: seen_ms})
                return _read_opened
            case RemoveConnection(uid, conn_id, gateway_id, offline_due_ms, rooms):
                # First: execute() reads the script's reply (on a cluster, the uid's
                # offline-due time, for its going-offline entry).
                keys = [names.presence_key(uid), names.offline_due_key(uid)]
                if not self.is_cluster:  # one command: the script writes them too
                    keys += [names.gateway_key(gateway_id), names.going_offline_key]
                pipeline.eval(
                    scripts.REMOVE_CONNECTION,
                    len(keys),
                    *keys,
                    conn_id,
                    gateway_id,
                    offline_due_ms,
                    uid,
                )
                if self.is_cluster:
                    pipeline.hdel(names.gateway_key(gateway_id), conn_id)
                for room in rooms:
                    self._queue_room(pipeline, room, request, is_join=False)
                return _read_written
            case RecordHeartbeat(gateway_id, seen_ms):
                pipeline.zadd(names.gateways_key, {gateway_id: seen_ms})
                pipeline.exists(names.gateway_known_key(gateway_id))
                return _read_heartbeat
            case CountInRoom(room=room):
                self._queue_room(pipeline, room, request, is_join=True)
                return _read_written
            case CountOutOfRoom(room=room):
                self._queue_room(pipeline, room, request, is_join=False)
                return _read_written
            case ReadVisibility(asker=asker, uids=uids):
                pipeline.smembers(names.member_of_key(asker))
                for uid in uids:
                    pipeline.hgetall(names.presence_key(uid))
                    pipeline.smembers(names.member_of_key(uid))
                return lambda replies: Visibility(
                    asker,
                    frozenset(replies[0]),
                    _by_uid(uids, replies[1::2]),
                    tuple(frozenset(groups) for groups in replies[2::2]),
                )
            case ReadGroupsLoaded() | LockRebuild() | ApplyMembers() | CountPage():
                return queue_group_request(pipeline, names, request, self.is_cluster)
            case (
                ReadGateways()
                | MarkKnown()
                | LockSweep()
                | UnlockSweep()
                | ReadGatewayRecord()
                | ForgetGateway()
                | ReadDueOffline()
                | ClaimDueOffline()
                | DropDueOffline()
            ):
                return queue_liveness_request(pipeline, names, request)

    def _queue_room(
        self,
        pipeline: RedisPipeline,
        room: str,
        member: RemoveConnection | CountInRoom | CountOutOfRoom,
        *,
        is_join: bool,
    ) -> None:
        """Queue a join or a leave of one connection: the room's count
        (``scripts.JOIN_ROOM``, ``scripts.LEAVE_ROOM``) and the gateway's entry, in the
        script on one server, beside it on a cluster (another slot)."""
        names = self._names
        gateway_id = member.gateway_id
        entry = room_entry(room, member.conn_id)
        keys = [names.room_members_key(room, gateway_id), names.room_key(room)]
        if not self.is_cluster:
            keys.append(names.gateway_rooms_key(gateway_id))
        pipeline.eval(
            scripts.JOIN_ROOM if is_join else scripts.LEAVE_ROOM,
            len(keys),
            *keys,
            member.conn_id,
            gateway_id,
            entry,
        )
        if not self.is_cluster:
            return
        if is_join:
            pipeline.sadd(names.gateway_rooms_key(gateway_id), entry)
        else:
            pipeline.srem(names.gateway_rooms_key(gateway_id), entry)


def _read_written(replies: list[Any]) -> Result:
    return WRITTEN


def _read_opened(replies: list[Any]) -> Result:
    [is_first, has_flapped, is_refused], _, _ = replies
    return Opened(
        is_first_connection=bool(is_first),
        has_flapped=bool(has_flapped),
        is_over_connection_limit=bool(is_refused),
    )


def _read_heartbeat(replies: list[Any]) -> Result:
    _, is_known = replies
    return HeartbeatRecorded(was_known=bool(is_known))


def _read_claimed(reads: Sequence[str], reply: list[Any]) -> Result:
    first_mid, *hashes = reply  # the mid, or None: Lua's false; then flat HGETALLs
    if not reads:
        return Claimed(first_mid)
    by_uid = tuple(zip(reads, map(_flat_connections, hashes), strict=True))
    return Claimed(first_mid, Connections(by_uid))


def _read_claimed_apart(reads: Sequence[str], replies: list[Any]) -> Result:
    """A claim whose reads were ``HGETALL``s beside its script (a Redis Cluster)."""
    [first_mid], *hashes = replies
    return Claimed(first_mid, Connections(_by_uid(reads, hashes)))


def _read_room(replies: list[Any]) -> Result:
    return RoomCounts(_counts(replies[0]))


def _by_uid(
    uids: Iterable[str], replies: Iterable[Mapping[str, str]]
) -> tuple[tuple[str, tuple[PresenceEntry, ...]], ...]:
    """Each uid with the connections of its ``<ns>:presence:{<uid>}`` hash."""
    return tuple(zip(uids, map(_connections, replies), strict=True))


def _counts(room: Mapping[str, str]) -> dict[str, int]:
    """A ``<ns>:room:{<room>}`` hash (gateway_id -> count) with its counts as ints."""
    return {gateway_id: int(count) for gateway_id, count in room.items()}


def _connections(presence: Mapping[str, str]) -> tuple[PresenceEntry, ...]:
    """The connections of one ``<ns>:presence:{<uid>}`` hash (conn_id -> gateway_id)."""
    return tuple(starmap(PresenceEntry, presence.items()))


def _flat_connections(presence: Sequence[str]) -> tuple[PresenceEntry, ...]:
    """The connections of one presence hash as a script returns it: conn_id, gateway_id, ..."""
    return tuple(map(PresenceEntry, presence[::2], presence[1::2]))
