"""Durable groups, the pure parts: the envelopes, the router's versioned writes and rebuild
decisions, the store's group commands and rebuild pages. No I/O."""

import msgspec
import pytest

from offline_store import group_pages
from offline_store.group_commands import (
    ChangeMembers,
    ListMembers,
    command_max_bytes,
    decode_group_command,
    members_reply,
)
from proto import envelopes
from proto.codes import ErrorCode
from proto.commands import RefusedCommand, error_reply
from proto.groups import (
    GroupChanged,
    GroupMember,
    GroupsPage,
    GroupsRequest,
    decode_group_changed,
    decode_groups_page,
    decode_groups_request,
)
from proto.packing import MIN_MAX_AMQP_MESSAGE_BYTES
from proto.rules import MAX_ID_LENGTH
from router import groups
from router.requests import (
    ApplyMembers,
    CountPage,
    ReadConnections,
    ReadGroup,
    ReadRoom,
    ReadVisibility,
)

# --- the envelopes ----------------------------------------------------------------------


def test_the_envelopes_round_trip() -> None:
    changed = GroupChanged(group="team", uids=["ann", "ben"], is_added=True, version=3)
    page = GroupsPage(
        rebuild_id="r1",
        index=1,
        count=2,
        members=[
            GroupMember("team", "ann", 3, True),
            GroupMember("team", "cat", 2, False),
        ],
    )
    request = GroupsRequest(rebuild_id="r1")
    assert decode_group_changed(envelopes.encode(changed)) == changed
    assert decode_groups_page(envelopes.encode(page)) == page
    assert decode_groups_request(envelopes.encode(request)) == request
    # A member is a short array: a page of many rows stays small.
    assert b'["team","cat",2,false]' in envelopes.encode(page)


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (b'{"group":"a:b","uids":[],"is_added":true,"version":1}', "$.group"),
        (
            b'{"group":"g","uids":["ok","no way"],"is_added":true,"version":1}',
            "$.uids[1]",
        ),
        (b'{"group":"g","uids":[],"is_added":true,"version":0}', "$.version"),
        (b'{"group":"g","uids":[],"is_added":1,"version":1}', "$.is_added"),
        (b'{"group":"g","uids":[]}', "is_added"),
    ],
)
def test_a_bad_group_changed_is_refused_with_its_path(body: bytes, path: str) -> None:
    with pytest.raises(msgspec.ValidationError) as refused:
        decode_group_changed(body)
    assert path in str(refused.value)


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (b'{"rebuild_id":"r","index":2,"count":2,"members":[]}', "$.index"),
        (b'{"rebuild_id":"r","index":0,"count":0,"members":[]}', "$.count"),
        (
            b'{"rebuild_id":"r","index":0,"count":1,"members":[["g","u",1]]}',
            "$.members[0]",
        ),
        (
            b'{"rebuild_id":"r","index":0,"count":1,"members":[["g","u:x",1,true]]}',
            "$.members[0][1]",
        ),
    ],
)
def test_a_bad_groups_page_is_refused_with_its_path(body: bytes, path: str) -> None:
    with pytest.raises(msgspec.ValidationError) as refused:
        decode_groups_page(body)
    assert path in str(refused.value)


# --- the router: versioned writes ---------------------------------------------------------


def test_a_change_writes_each_uid_once_at_its_version() -> None:
    changed = GroupChanged(group="g", uids=["a", "b"], is_added=False, version=7)
    assert groups.changes_requests([changed]) == [
        ApplyMembers("g", (("a", 7, False), ("b", 7, False)))
    ]


def test_changes_of_a_batch_keep_the_highest_version_of_each_member() -> None:
    changes = [
        GroupChanged(group="g", uids=["a", "b"], is_added=True, version=5),
        GroupChanged(group="h", uids=["a"], is_added=True, version=1),
        GroupChanged(group="g", uids=["a"], is_added=False, version=4),  # older: late
        GroupChanged(group="g", uids=["b"], is_added=False, version=6),
    ]
    assert groups.changes_requests(changes) == [
        ApplyMembers("g", (("a", 5, True), ("b", 6, False))),
        ApplyMembers("h", (("a", 1, True),)),
    ]


def test_add_remove_add_in_any_order_ends_as_the_highest_version_says() -> None:
    steps = [
        GroupChanged(group="g", uids=["a"], is_added=True, version=1),
        GroupChanged(group="g", uids=["a"], is_added=False, version=2),
        GroupChanged(group="g", uids=["a"], is_added=True, version=3),
    ]
    for order in ([0, 1, 2], [2, 1, 0], [1, 2, 0], [2, 0, 1]):
        [request] = groups.changes_requests([steps[i] for i in order])
        assert request == ApplyMembers("g", (("a", 3, True),))


def test_a_page_writes_its_members_then_counts_itself() -> None:
    page = GroupsPage(
        rebuild_id="r1",
        index=0,
        count=3,
        members=[
            GroupMember("g", "a", 2, True),
            GroupMember("g", "b", 3, False),
            GroupMember("h", "a", 1, True),
        ],
    )
    assert groups.page_requests(page) == [
        ApplyMembers("g", (("a", 2, True), ("b", 3, False))),
        ApplyMembers("h", (("a", 1, True),)),
        CountPage("r1", 0, 3, groups.REBUILD_PAGES_TTL_MS),
    ]


def test_an_empty_page_only_counts() -> None:
    page = GroupsPage(rebuild_id="r1", index=0, count=1, members=[])
    assert groups.page_requests(page) == [
        CountPage("r1", 0, 1, groups.REBUILD_PAGES_TTL_MS)
    ]


# --- the router: when to rebuild, when to wait, when it is over ------------------------------

GROUP_READ = ReadGroup("g", "ann")
VISIBILITY = ReadVisibility("ann", ("ben",))
OTHERS = [ReadConnections(("ben",)), ReadRoom("lobby")]


@pytest.mark.parametrize(
    ("is_loaded", "requests", "waits"),
    [
        (True, [GROUP_READ], False),
        (False, [GROUP_READ], True),
        (False, [*OTHERS, VISIBILITY], True),
        (False, OTHERS, False),
        (False, [], False),
        (True, [*OTHERS, VISIBILITY, GROUP_READ], False),
    ],
)
def test_a_batch_waits_only_when_it_reads_members_that_are_missing(
    is_loaded: bool, requests: list[ReadConnections], waits: bool
) -> None:
    assert groups.must_wait(is_loaded, requests) is waits


def test_a_rebuild_is_asked_when_the_members_are_missing() -> None:
    assert groups.should_ask_rebuild(is_loaded=False)
    assert not groups.should_ask_rebuild(is_loaded=True)


@pytest.mark.parametrize(
    ("applied", "count", "is_complete"),
    [(0, 1, False), (1, 1, True), (2, 3, False), (3, 3, True), (4, 3, True)],
)
def test_a_rebuild_is_over_once_every_page_is_applied(
    applied: int, count: int, is_complete: bool
) -> None:
    assert groups.is_rebuild_complete(applied, count) is is_complete


# --- the store: group commands ------------------------------------------------------------


def test_an_add_or_remove_becomes_one_change_with_each_uid_once() -> None:
    body = b'{"group": "g", "uids": ["b", "a", "b"], "extra": 1}'
    assert decode_group_command("api.group.add", body, 1024) == ChangeMembers(
        "g", ("b", "a"), is_added=True
    )
    assert decode_group_command("api.group.remove", body, 1024) == ChangeMembers(
        "g", ("b", "a"), is_added=False
    )
    assert decode_group_command("api.group.members", b'{"group":"g"}', 1024) == (
        ListMembers("g")
    )


@pytest.mark.parametrize(
    ("routing_key", "body", "code", "path"),
    [
        ("api.group.members", b"{}", ErrorCode.INVALID_FIELD, "`group`"),
        ("api.group.members", b'{"group": "a b"}', ErrorCode.INVALID_FIELD, "$.group"),
        (
            "api.group.add",
            b'{"group": "g", "uids": "a"}',
            ErrorCode.INVALID_FIELD,
            "$.uids",
        ),
        (
            "api.group.add",
            b'{"group": "g", "uids": [1]}',
            ErrorCode.INVALID_FIELD,
            "$.uids[0]",
        ),
        ("api.group.remove", b"{nope", ErrorCode.INVALID_JSON, ""),
        ("api.group.add", b" " * 1025, ErrorCode.TOO_LARGE, "1024"),
        # Too deep is refused by the body rule, as the router refuses it.
        (
            "api.group.add",
            b'{"group": "g", "uids": ["a"], "x": ' + b"[" * 200 + b"]" * 200 + b"}",
            ErrorCode.INVALID_FIELD,
            "levels deep",
        ),
        ("api.send", b"{}", ErrorCode.UNKNOWN_COMMAND, ""),
        ("router.groups", b"{}", ErrorCode.UNKNOWN_COMMAND, ""),
    ],
)
def test_a_bad_group_command_is_refused_with_its_code_and_path(
    routing_key: str, body: bytes, code: ErrorCode, path: str
) -> None:
    refused = decode_group_command(routing_key, body, 1024)
    assert isinstance(refused, RefusedCommand)
    assert refused.code == code
    assert path in refused.reason
    reply = msgspec.json.decode(error_reply(refused))
    assert reply["error"]["code"] == code


def test_a_change_is_refused_when_its_group_changed_could_not_fit_a_message() -> None:
    assert command_max_bytes(1_048_576, 4 * 1024 * 1024) == 1_048_576
    limit = command_max_bytes(1_048_576, MIN_MAX_AMQP_MESSAGE_BYTES)
    assert limit < MIN_MAX_AMQP_MESSAGE_BYTES
    # The largest change accepted, at its largest once re-encoded, fits one message.
    uid = "u" * MAX_ID_LENGTH
    uids = [uid] * ((limit - 2 * MAX_ID_LENGTH) // (len(uid) + 3))
    body = msgspec.json.encode({"group": "g" * MAX_ID_LENGTH, "uids": uids})
    assert len(body) <= limit
    changed = GroupChanged(
        group="g" * MAX_ID_LENGTH, uids=uids, is_added=False, version=2**62
    )
    assert len(envelopes.encode(changed)) <= MIN_MAX_AMQP_MESSAGE_BYTES


def test_the_members_reply_lists_them_or_says_it_is_too_large() -> None:
    assert msgspec.json.decode(members_reply(["a", "b"], 1000)) == {"uids": ["a", "b"]}
    assert msgspec.json.decode(members_reply([], 1000)) == {"uids": []}
    too_many = msgspec.json.decode(members_reply(["u" * 100] * 20, 1000))
    assert too_many["error"]["code"] == ErrorCode.TOO_LARGE


# --- the store: rebuild pages --------------------------------------------------------------


@pytest.mark.parametrize("max_bytes", [MIN_MAX_AMQP_MESSAGE_BYTES, 4 * 1024 * 1024])
def test_a_full_page_of_the_largest_rows_fits_one_message(max_bytes: int) -> None:
    rows = group_pages.page_rows(max_bytes)
    assert 1 <= rows <= group_pages.MAX_PAGE_ROWS
    longest = "x" * MAX_ID_LENGTH
    members = [GroupMember(longest, longest, 2**63 - 1, False)] * rows
    body = group_pages.page_body(
        GroupsRequest(rebuild_id="r" * MAX_ID_LENGTH), 2**31, 2**31 + 1, members
    )
    assert len(body) <= max_bytes


@pytest.mark.parametrize(
    ("rows", "per_page", "pages"),
    [(0, 100, 1), (1, 100, 1), (100, 100, 1), (101, 100, 2), (1000, 219, 5)],
)
def test_pages_are_counted_with_at_least_one(
    rows: int, per_page: int, pages: int
) -> None:
    assert group_pages.page_count(rows, per_page) == pages


def test_only_the_last_rebuild_request_of_a_batch_is_served() -> None:
    first, last = GroupsRequest(rebuild_id="a"), GroupsRequest(rebuild_id="b")
    assert group_pages.requests_to_serve([first, last]) == [last]
    assert group_pages.requests_to_serve([]) == []
