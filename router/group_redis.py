"""The Redis commands of the group requests (requests.py): the membership copy's version
check, its writes, and the rebuild's lock and count of pages.

Decides nothing: presence.py hands it these requests to queue in a pipeline, and reads the
replies with the function it returns. The scripts are in scripts.py, the decisions in groups.py.
"""

from collections.abc import Callable
from typing import Any

from proto.names import Names
from router import scripts
from router.redis_client import RedisPipeline
from router.requests import ApplyMembers, CountPage, LockRebuild, ReadGroupsLoaded
from router.results import Applied, GroupsLoaded, Locked, PagesCounted, Result

GroupRequest = ReadGroupsLoaded | LockRebuild | ApplyMembers | CountPage
"""The requests queued here."""


def queue_group_request(
    pipeline: RedisPipeline, names: Names, request: GroupRequest
) -> Callable[[list[Any]], Result]:
    """Queue one group request's commands; return how to read their replies."""
    match request:
        case ReadGroupsLoaded():
            pipeline.exists(names.groups_loaded_key)
            return lambda replies: GroupsLoaded(bool(replies[0]))
        case LockRebuild(lock_ms=lock_ms):
            pipeline.set(names.groups_rebuild_key, "1", nx=True, px=lock_ms)
            return lambda replies: Locked(bool(replies[0]))
        case ApplyMembers(group=group, members=members):
            # The group's side in its slot, then each member's side in the member's
            # (scripts.py): each under its own versions, so both end alike.
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
            for uid, version, is_member in members:
                pipeline.eval(
                    scripts.APPLY_MEMBERS,
                    2,
                    names.member_of_key(uid),
                    names.member_of_version_key(uid),
                    group,
                    version,
                    _flag(is_member),
                )
            return lambda replies: Applied(int(replies[0]))
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


def _flag(is_member: bool) -> str:
    return "1" if is_member else "0"
