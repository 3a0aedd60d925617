"""The Redis commands of the liveness requests (requests.py): the gateways' heartbeats and
records, their sweep's lock and the forgetting of a dead gateway, and the going-offline set of
the uids that lost their last connection.

Decides nothing: presence.py hands it these requests to queue in a pipeline, and reads the
replies with the function it returns. The decisions are in liveness.py, sweeping.py and
debounce.py; a batch reads the gateways for a broadcast (lookups.py) and marks the gateways it
heard of as known (routing.py).
"""

from collections.abc import Callable
from typing import Any, cast

from redis.asyncio.client import Pipeline

from proto.names import Names
from router.requests import (
    ClaimDueOffline,
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
)
"""The requests queued here."""


def queue_liveness_request(
    pipeline: "Pipeline", names: Names, request: LivenessRequest
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
                names.going_offline_key, "-inf", due_ms, start=0, num=limit
            )
            return lambda replies: DueUids(tuple(replies[0]))
        case ClaimDueOffline(uid=uid):
            pipeline.zrem(names.going_offline_key, uid)
            pipeline.hlen(names.presence_key(uid))
            return lambda replies: DueClaim(bool(replies[0]), int(replies[1]))


def _read_written(replies: list[Any]) -> Result:
    return WRITTEN


def _read_gateways(replies: list[Any]) -> Result:
    # withscores, int scores and decoded responses make it (member, score) pairs
    pairs = cast(list[tuple[str, int]], replies[0])
    return GatewaysRead(dict(pairs))


def _read_gateway_record(replies: list[Any]) -> Result:
    score, connections, rooms = replies
    last_seen_ms = None if score is None else int(score)
    return GatewayRecord(last_seen_ms, dict(connections), frozenset(rooms))
