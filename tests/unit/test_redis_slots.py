"""Redis Cluster slots: every key of one uid, gateway, room or group is in one slot, and every
script the router queues names keys of one slot. No event loop, no network: the commands are
queued into a recorder, never sent."""

from typing import Any, get_args

import pytest
from redis.crc import key_slot

from proto.names import Names
from router import scripts
from router.group_redis import MEMBERS_PER_SCRIPT
from router.presence import Presence
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
from router.results import Applied, Claimed, Connections, PresenceEntry

NAMES = Names("tunit")
IDS = [
    "alice",
    "bob",
    "gw-1a2b3c",
    "lobby",
    "team",
    "x",
    "ann@example.com",
    "auth0|5f7c",
]


def slots(keys: list[str]) -> set[int]:
    return {key_slot(key.encode()) for key in keys}


@pytest.mark.parametrize("uid", IDS)
def test_the_keys_of_a_uid_share_a_slot(uid: str) -> None:
    keys = [
        NAMES.presence_key(uid),
        NAMES.offline_due_key(uid),
        NAMES.dedup_key(uid, 41),
        NAMES.dedup_key(uid, 42),
        NAMES.api_dedup_key(uid, 42),
        NAMES.member_of_key(uid),
        NAMES.member_of_version_key(uid),
        NAMES.rate_key(uid, 7),
    ]
    assert slots(keys) == {key_slot(uid.encode())}


@pytest.mark.parametrize("gateway_id", IDS)
def test_the_keys_of_a_gateway_share_a_slot(gateway_id: str) -> None:
    keys = [
        NAMES.gateway_key(gateway_id),
        NAMES.gateway_known_key(gateway_id),
        NAMES.gateway_rooms_key(gateway_id),
        NAMES.sweep_lock_key(gateway_id),
    ]
    assert len(slots(keys)) == 1


@pytest.mark.parametrize("room", IDS)
def test_the_keys_of_a_room_share_a_slot(room: str) -> None:
    keys = [NAMES.room_key(room)]
    keys += [NAMES.room_members_key(room, gateway_id) for gateway_id in IDS]
    assert len(slots(keys)) == 1


@pytest.mark.parametrize("group", IDS)
def test_the_keys_of_a_group_share_a_slot(group: str) -> None:
    assert len(slots([NAMES.group_key(group), NAMES.group_version_key(group)])) == 1


def test_the_keys_of_a_rebuild_share_a_slot() -> None:
    keys = [
        NAMES.groups_loaded_key,
        NAMES.groups_rebuild_key,
        NAMES.groups_pages_key("a1b2"),
        NAMES.groups_pages_key("c3d4"),
    ]
    assert len(slots(keys)) == 1


def test_other_namespaces_tag_their_keys_alike() -> None:
    other = Names("switchboard")
    assert key_slot(other.presence_key("alice").encode()) == key_slot(b"alice")


class RecordingPipeline:
    """Stands for a pipeline: records each command queued, sends nothing."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, tuple[Any, ...]]] = []

    def __len__(self) -> int:
        return len(self.commands)

    def __getattr__(self, command: str) -> Any:
        def queue(*args: Any, **kwargs: Any) -> "RecordingPipeline":
            self.commands.append((command, args))
            return self

        return queue


SAMPLES: dict[type, Request] = {
    OpenConnection: OpenConnection("alice", "k1", "gw1", 20, 1_000),
    RemoveConnection: RemoveConnection("alice", "k1", "gw1", 3_000, ("lobby", "r2")),
    CountInRoom: CountInRoom("k1", "gw1", "lobby"),
    CountOutOfRoom: CountOutOfRoom("k1", "gw1", "lobby"),
    RecordHeartbeat: RecordHeartbeat("gw1", 1_000),
    ClaimClientId: ClaimClientId("alice", "c1", "m1", 7, 9_000, reads=("bob", "alice")),
    ReadConnections: ReadConnections(("alice", "bob")),
    ReadVisibility: ReadVisibility("alice", ("bob", "carol")),
    ReadGroup: ReadGroup("team", "alice"),
    ReadRoom: ReadRoom("lobby"),
    AddCost: AddCost("alice", 7, 1, 2_000),
    ReadGateways: ReadGateways(),
    ReadGroupsLoaded: ReadGroupsLoaded(),
    LockRebuild: LockRebuild(10_000),
    ApplyMembers: ApplyMembers("team", (("alice", 3, True), ("bob", 4, False))),
    CountPage: CountPage("a1b2", 0, 3, 60_000),
    MarkKnown: MarkKnown("gw1"),
    LockSweep: LockSweep("gw1", 30),
    UnlockSweep: UnlockSweep("gw1"),
    ReadGatewayRecord: ReadGatewayRecord("gw1"),
    ForgetGateway: ForgetGateway("gw1", ("lobby", "r2")),
    ReadDueOffline: ReadDueOffline(5_000, 500),
    ClaimDueOffline: ClaimDueOffline("alice", 5_000),
    DropDueOffline: DropDueOffline("alice", 4_000),
}


def test_every_request_has_a_sample() -> None:
    assert set(SAMPLES) == set(get_args(Request))


def queue(request: Request, *, is_cluster: bool) -> tuple[RecordingPipeline, Any]:
    """The commands of a request, and the function that reads their replies."""
    presence = Presence(None, NAMES, 1.0, is_cluster=is_cluster)  # type: ignore[arg-type]
    pipeline = RecordingPipeline()
    read = presence._queue(pipeline, request)  # type: ignore[arg-type]
    return pipeline, read


def queued(request: Request, *, is_cluster: bool) -> list[tuple[str, tuple[Any, ...]]]:
    return queue(request, is_cluster=is_cluster)[0].commands


@pytest.mark.parametrize("request_type", list(SAMPLES), ids=lambda t: t.__name__)
def test_each_script_names_keys_of_one_slot_on_a_cluster(request_type: type) -> None:
    for command, args in queued(SAMPLES[request_type], is_cluster=True):
        if command == "eval":
            _, key_count, *rest = args
            keys = rest[:key_count]
            assert len(slots(keys)) == 1, (request_type.__name__, keys)


def test_a_large_change_is_written_a_script_per_chunk_of_members() -> None:
    members = tuple((f"u{n}", 2, n % 2 == 0) for n in range(2 * MEMBERS_PER_SCRIPT + 1))
    change = ApplyMembers("team", members)
    group_side = (scripts.APPLY_MEMBERS, 2, NAMES.group_key("team"))
    member_side = (scripts.APPLY_MEMBERSHIPS, 2 * MEMBERS_PER_SCRIPT)

    on_one_server = queued(change, is_cluster=False)

    # Per chunk: the group's side, then every member's side in one command.
    assert [args[:3] for _, args in on_one_server[0::2]] == [group_side] * 3
    assert [args[:2] for _, args in on_one_server[1::2]] == [member_side] * 2 + [
        (scripts.APPLY_MEMBERSHIPS, 2)
    ]
    _, _, *last = on_one_server[-1][1]
    assert last == [
        NAMES.member_of_key("u2000"),
        NAMES.member_of_version_key("u2000"),
        "team",
        2,
        "1",
    ]
    # On a cluster: a command per member, each in the member's slot.
    on_a_cluster = queued(change, is_cluster=True)
    assert len(on_a_cluster) == 3 + len(members)


@pytest.mark.parametrize("is_cluster", [False, True])
def test_a_large_change_counts_the_members_changed_on_the_groups_side(
    is_cluster: bool,
) -> None:
    members = tuple((f"u{n}", 2, True) for n in range(MEMBERS_PER_SCRIPT + 5))
    pipeline, read = queue(ApplyMembers("team", members), is_cluster=is_cluster)
    # Each group side answers how many of its chunk changed; the member sides, 1 each.
    replies = [
        7 if args[2] == NAMES.group_key("team") else 1 for _, args in pipeline.commands
    ]
    assert read(replies) == Applied(14)


def test_a_claim_reads_its_recipients_beside_its_script_on_a_cluster() -> None:
    claim = SAMPLES[ClaimClientId]
    on_a_cluster = [command for command, _ in queued(claim, is_cluster=True)]
    on_one_server = [command for command, _ in queued(claim, is_cluster=False)]

    assert on_a_cluster == ["eval", "hgetall", "hgetall"]
    assert on_one_server == ["eval"]  # one command per message


@pytest.mark.parametrize(
    ("is_cluster", "replies"),
    [
        (False, [["m0", ["k1", "gw1"]]]),  # the script's reply, the hash flat in it
        (True, [["m0"], {"k1": "gw1"}]),  # the script's, then the HGETALL's
    ],
)
def test_a_claim_reads_alike_on_both(is_cluster: bool, replies: list[Any]) -> None:
    claim = ClaimClientId("alice", "c1", "m1", 7, 9_000, reads=("bob",))
    _, read = queue(claim, is_cluster=is_cluster)
    bob = (("bob", (PresenceEntry("k1", "gw1"),)),)
    assert read(replies) == Claimed("m0", Connections(bob))


@pytest.mark.parametrize("is_cluster", [False, True])
def test_a_claim_without_reads_reads_no_connections(is_cluster: bool) -> None:
    claim = ClaimClientId("alice", "c1", "m1", 7, 9_000)  # a broadcast's, a group's
    pipeline, read = queue(claim, is_cluster=is_cluster)
    assert [command for command, _ in pipeline.commands] == ["eval"]
    assert read([[None]]) == Claimed(None)


@pytest.mark.parametrize(
    ("request_type", "on_one_server", "on_a_cluster"),
    [
        # a removal with its two rooms
        (RemoveConnection, ["eval"] * 3, ["eval", "hdel"] + ["eval", "srem"] * 2),
        (CountInRoom, ["eval"], ["eval", "sadd"]),
        (CountOutOfRoom, ["eval"], ["eval", "srem"]),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else "",
)
def test_one_server_writes_a_connection_s_keys_in_one_script(
    request_type: type, on_one_server: list[str], on_a_cluster: list[str]
) -> None:
    request = SAMPLES[request_type]
    assert [c for c, _ in queued(request, is_cluster=False)] == on_one_server
    assert [c for c, _ in queued(request, is_cluster=True)] == on_a_cluster
