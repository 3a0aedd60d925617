"""Group membership in the router: the decisions about Redis's copy of the members.

Pure: no I/O. The offline store owns the members (PostgreSQL); Redis holds a copy for routing
(``<ns>:group:{<group>}``, the reverse ``<ns>:member-of:{<uid>}``), with the version of the
change that last touched each member (``<ns>:group-version:{<group>}``, and on the uid's side
``<ns>:member-of-version:{<uid>}``). Decided here:

* what a ``GroupChanged`` or a ``GroupsPage`` writes: each member with its version, a uid once
  (the highest version of it), group by group (``member_requests``); the Lua scripts
  (``scripts.APPLY_MEMBERS`` on the group's side, ``scripts.APPLY_MEMBERSHIPS`` on the
  members') write a member only over a lower version, so that changes and pages applied in any
  order, by any router, leave each member as its highest version says;
* when the copy is missing (``<ns>:groups-loaded:{groups}`` is not set: Redis restarted empty,
  or the namespace is new): a router asks the store for a rebuild, under a lock
  (``should_ask_rebuild``), and a batch that reads members waits, its messages held
  (``must_wait``);
* when a rebuild is over (``is_rebuild_complete``): every page of it applied.
"""

from collections.abc import Iterable, Sequence

from proto.groups import GroupChanged, GroupMember, GroupsPage
from router.requests import (
    ApplyMembers,
    CountPage,
    ReadGroup,
    ReadVisibility,
    Request,
)

REBUILD_LOCK_MS = 10_000
"""How long a router's rebuild request stands before another router may ask again (a lost
request, or an offline store that is away)."""
REBUILD_PAGES_TTL_MS = 3_600_000
"""How long a rebuild's count of applied pages is kept: far longer than a rebuild takes."""

MemberVersion = tuple[str, int, bool]
"""``(uid, version, is_member)``: one member as one change or page sets it."""


class GroupsNotLoaded(Exception):
    """A batch reads group members while Redis has none (a rebuild is under way): it waits."""


def reads_members(requests: Iterable[Request]) -> bool:
    """Whether a batch's requests read group membership: a group message's members, or the
    groups of a presence query under ``shared_group``."""
    return any(isinstance(r, ReadGroup | ReadVisibility) for r in requests)


def must_wait(is_loaded: bool, requests: Iterable[Request]) -> bool:
    """Whether a batch must wait for the members: Redis has no copy, and the batch reads it."""
    return not is_loaded and reads_members(requests)


def should_ask_rebuild(is_loaded: bool) -> bool:
    """Whether a router asks the store for the members (under the rebuild lock)."""
    return not is_loaded


def is_rebuild_complete(applied: int, count: int) -> bool:
    """Whether every page of a rebuild is applied (``scripts.COUNT_PAGE`` decides the same in
    Redis, where it marks the groups loaded)."""
    return applied >= count


def changed_members(changed: GroupChanged) -> list[GroupMember]:
    """The members a ``GroupChanged`` sets, each at its version."""
    return [
        GroupMember(changed.group, uid, changed.version, changed.is_added)
        for uid in changed.uids
    ]


def member_requests(members: Iterable[GroupMember]) -> list[ApplyMembers]:
    """The writes of these members: one request per group, in first-seen order, each uid once
    at its highest version (of two rows of one version, the later)."""
    latest: dict[str, dict[str, MemberVersion]] = {}
    for member in members:
        of_group = latest.setdefault(member.group, {})
        seen = of_group.get(member.uid)
        if seen is None or member.version >= seen[1]:
            of_group[member.uid] = (member.uid, member.version, member.is_member)
    return [
        ApplyMembers(group, tuple(by_uid.values())) for group, by_uid in latest.items()
    ]


def page_requests(page: GroupsPage) -> list[ApplyMembers | CountPage]:
    """A rebuild page's writes, then the count of the page (in one transaction with them)."""
    counted = CountPage(page.rebuild_id, page.index, page.count, REBUILD_PAGES_TTL_MS)
    return [*member_requests(page.members), counted]


def changes_requests(changes: Sequence[GroupChanged]) -> list[ApplyMembers]:
    """The writes of a batch's changes, together (one request per group)."""
    return member_requests(m for changed in changes for m in changed_members(changed))
