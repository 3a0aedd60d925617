"""The Redis commands of the group requests (requests.py): the membership copy's version
check, its writes, and the rebuild's lock and count of pages.

Decides nothing: presence.py hands it these requests to queue in a pipeline, and reads the
replies with the function it returns. The scripts are in scripts.py, the decisions in groups.py.
"""

from collections.abc import Callable, Sequence
from typing import Any

from proto.names import Names
from router import scripts
from router.redis_client import RedisPipeline
from router.requests import ApplyMembers, CountPage, LockRebuild, ReadGroupsLoaded
from router.results import Applied, GroupsLoaded, Locked, PagesCounted, Result

GroupRequest = ReadGroupsLoaded | LockRebuild | ApplyMembers | CountPage
"""The requests queued here."""

MEMBERS_PER_SCRIPT = 1_000
"""Members of one change written by one script: Redis runs a script alone, so one for tens
of thousands of members would hold up every other client's commands meanwhile."""


def queue_group_request(
    pipeline: RedisPipeline, names: Names, request: GroupRequest, is_cluster: bool
) -> Callable[[list[Any]], Result]:
    """Queue one group request's commands; return how to read their replies (``is_cluster``:
    each uid's keys are in a slot of their own)."""
    match request:
        case ReadGroupsLoaded():
            pipeline.exists(names.groups_loaded_key)
            return lambda replies: GroupsLoaded(bool(replies[0]))
        case LockRebuild(lock_ms=lock_ms):
            pipeline.set(names.groups_rebuild_key, "1", nx=True, px=lock_ms)
            return lambda replies: Locked(bool(replies[0]))
        case ApplyMembers(group=group, members=members):
            # The group's side in its slot, then the members' side in theirs (scripts.py):
            # each under its own versions, so both end alike.
            first = len(pipeline)
            # Where each script of the group's side replies, among the request's replies.
            group_sides: list[int] = []
            for start in range(0, len(members), MEMBERS_PER_SCRIPT):
                chunk = members[start : start + MEMBERS_PER_SCRIPT]
                group_sides.append(len(pipeline) - first)
                _queue_group_side(pipeline, names, group, chunk)
                if is_cluster:
                    for member in chunk:
                        _queue_member_sides(pipeline, names, group, [member])
                else:
                    _queue_member_sides(pipeline, names, group, chunk)
            return lambda replies: Applied(sum(int(replies[i]) for i in group_sides))
        case CountPage(rebuild_id, index, count, expire_ms):
            pipeline.eval(
                scripts.COUNT_PAGE,
                3,
                names.groups_pages_key(rebuild_id),
                names.groups_loaded_key,
                names.groups_rebuild_key,
                index,
                count,
                expire_ms,
            )
            return lambda replies: PagesCounted(int(replies[0]), count)


def _queue_group_side(
    pipeline: RedisPipeline,
    names: Names,
    group: str,
    members: Sequence[tuple[str, int, bool]],
) -> None:
    """The group's members and their versions (``scripts.APPLY_MEMBERS``)."""
    values: list[str | int] = []
    for uid, version, is_member in members:
        values += [uid, version, _flag(is_member)]
    pipeline.eval(
        scripts.APPLY_MEMBERS,
        2,
        names.group_key(group),
        names.group_version_key(group),
        *values,
    )


def _queue_member_sides(
    pipeline: RedisPipeline,
    names: Names,
    group: str,
    members: Sequence[tuple[str, int, bool]],
) -> None:
    """These members' groups and their versions, in one command
    (``scripts.APPLY_MEMBERSHIPS``); on a Redis Cluster, one member a command (each uid's keys
    are in a slot of their own)."""
    keys: list[str] = []
    values: list[str | int] = [group]
    for uid, version, is_member in members:
        keys += [names.member_of_key(uid), names.member_of_version_key(uid)]
        values += [version, _flag(is_member)]
    pipeline.eval(scripts.APPLY_MEMBERSHIPS, len(keys), *keys, *values)


def _flag(is_member: bool) -> str:
    return "1" if is_member else "0"
