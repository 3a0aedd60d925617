"""The Redis commands of the liveness requests (requests.py): the gateways' heartbeats and
records, their sweep's lock and the forgetting of a dead gateway, and the going-offline set of
the uids that lost their last connection (with their offline-due keys).

Decides nothing: presence.py hands it these requests to queue in a pipeline, and reads the
replies with the function it returns. The decisions are in liveness.py, sweeping.py and
debounce.py; a batch reads the gateways for a broadcast (lookups.py) and marks the gateways it
heard of as known (routing.py).
"""

from collections.abc import Callable
from typing import Any, cast

from proto.names import Names
from router import scripts
from router.redis_client import RedisPipeline
from router.requests import (
    ClaimDueOffline,
    DropDueOffline,
    ForgetGateway,
    LockSweep,
    MarkKnown,
    ReadDueOffline,
    ReadGatewayRecord,
    ReadGateways,
    UnlockSweep,
)
from router.results import (
    WRITTEN,
    DueClaim,
    DueUids,
    GatewayRecord,
    GatewaysRead,
    Locked,
    Result,
)

LivenessRequest = (
    ReadGateways
    | MarkKnown
    | LockSweep
    | UnlockSweep
    | ReadGatewayRecord
    | ForgetGateway
    | ReadDueOffline
    | ClaimDueOffline
    | DropDueOffline
)
"""The requests queued here."""

ROOM_ENTRY_SEPARATOR = ":"
"""Between the room and the conn_id of an entry of ``<ns>:gateway:{<id>}:rooms``: neither
identifier holds one (proto/rules.py)."""


def room_entry(room: str, conn_id: str) -> str:
    """The entry of a gateway's connection in a room, in ``<ns>:gateway:{<id>}:rooms``."""
    return f"{room}{ROOM_ENTRY_SEPARATOR}{conn_id}"


def room_of_entry(entry: str) -> str:
    """The room of an entry of ``<ns>:gateway:{<id>}:rooms``."""
    return entry.partition(ROOM_ENTRY_SEPARATOR)[0]


def queue_liveness_request(
    pipeline: RedisPipeline, names: Names, request: LivenessRequest
) -> Callable[[list[Any]], Result]:
    """Queue one liveness request's commands; return how to read their replies."""
    match request:
        case ReadGateways():
            pipeline.zrange(
                names.gateways_key, 0, -1, withscores=True, score_cast_func=int
            )
            return _read_gateways
        case MarkKnown(gateway_id=gateway_id):
            pipeline.set(names.gateway_known_key(gateway_id), "1")
            return _read_written
        case LockSweep(gateway_id=gateway_id, lock_s=lock_s):
            lock_key = names.sweep_lock_key(gateway_id)
            pipeline.set(lock_key, "1", nx=True, ex=lock_s)
            return lambda replies: Locked(bool(replies[0]))
        case UnlockSweep(gateway_id=gateway_id):
            pipeline.delete(names.sweep_lock_key(gateway_id))
            return _read_written
        case ReadGatewayRecord(gateway_id=gateway_id):
            pipeline.zscore(names.gateways_key, gateway_id)
            pipeline.hgetall(names.gateway_key(gateway_id))
            pipeline.smembers(names.gateway_rooms_key(gateway_id))
            return _read_gateway_record
        case ForgetGateway(gateway_id=gateway_id, rooms=rooms):
            for room in rooms:
                pipeline.hdel(names.room_key(room), gateway_id)
                pipeline.delete(names.room_members_key(room, gateway_id))
            pipeline.delete(names.gateway_rooms_key(gateway_id))
            pipeline.delete(names.gateway_key(gateway_id))
            pipeline.delete(names.gateway_known_key(gateway_id))
            pipeline.zrem(names.gateways_key, gateway_id)
            return _read_written
        case ReadDueOffline(due_ms=due_ms, limit=limit):
            pipeline.zrangebyscore(
                names.going_offline_key,
                "-inf",
                due_ms,
                start=0,
                num=limit,
                withscores=True,
                score_cast_func=int,
            )
            return _read_due
        case ClaimDueOffline(uid=uid, now_ms=now_ms):
            pipeline.eval(
                scripts.CLAIM_OFFLINE,
                2,
                names.offline_due_key(uid),
                names.presence_key(uid),
                now_ms,
            )
            return _read_claim
        case DropDueOffline(uid=uid, due_ms=due_ms):
            pipeline.eval(scripts.DROP_DUE, 1, names.going_offline_key, uid, due_ms)
            return _read_written


def _read_written(replies: list[Any]) -> Result:
    return WRITTEN


def _read_gateways(replies: list[Any]) -> Result:
    # withscores, int scores and decoded responses make it (member, score) pairs
    pairs = cast(list[tuple[str, int]], replies[0])
    return GatewaysRead(dict(pairs))


def _read_gateway_record(replies: list[Any]) -> Result:
    score, connections, entries = replies
    last_seen_ms = None if score is None else int(score)
    rooms = frozenset(map(room_of_entry, entries))
    return GatewayRecord(last_seen_ms, dict(connections), rooms)


def _read_due(replies: list[Any]) -> Result:
    # withscores, int scores and decoded responses make it (member, score) pairs
    pairs = cast(list[tuple[str, int]], replies[0])
    return DueUids(tuple(uid for uid, _ in pairs), tuple(due_ms for _, due_ms in pairs))


def _read_claim(replies: list[Any]) -> Result:
    is_claimed, connection_count, is_pending = replies[0]
    return DueClaim(bool(is_claimed), int(connection_count), bool(is_pending))
