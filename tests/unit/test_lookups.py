"""lookups.py: a batch in, typed requests out, typed results in, one answer per envelope out.

Sans-I/O, like websockets' tests/test_protocol.py: the test plays Redis, handing each round's
results back by hand. What presence.py sends Redis for each request is covered by the
integration tests.
"""

import typing

import msgspec
import pytest

from proto.codes import ErrorCode
from proto.envelopes import (
    ApiBroadcast,
    ApiConnections,
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
    SavedUid,
)
from proto.limits import PresencePolicy
from router.answers import (
    EVERYONE,
    NOT_MEMBER,
    PRESENCE_FORBIDDEN,
    Answer,
    Recipients,
    Retried,
)
from router.inbound import Call, Inbound, Refused
from router.limits import Throttled, UidRate
from router.lookups import (
    BatchLookup,
    LookupRules,
    visible_connections,
)
from router.requests import (
    AddCost,
    ClaimClientId,
    CountInRoom,
    CountOutOfRoom,
    OpenConnection,
    ReadConnections,
    ReadGateways,
    ReadGroup,
    ReadRoom,
    ReadVisibility,
    RecordHeartbeat,
    RemoveConnection,
    Request,
)
from router.results import (
    RESULT_OF,
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
    check_results,
    expect,
)

AT_MS = 1_700_000_000_300
DEDUP_TTL_MS = 60_000
WINDOW = AT_MS // DEDUP_TTL_MS
EXPIRE_AT_MS = (WINDOW + 2) * DEDUP_TTL_MS
DEBOUNCE_MS = 2_000
RULES = LookupRules(dedup_ttl_ms=DEDUP_TTL_MS, debounce_ms=DEBOUNCE_MS)
BOB_ONLINE = Connections((("bob", (PresenceEntry("k1", "gw1"),)),))


def send(mid: str = "m1", client_id: str = "c1", **addressing: object) -> Outgoing:
    fields = addressing or {"to": "bob"}
    return Outgoing(
        mid=mid,
        sender="alice",
        client_id=client_id,
        body=msgspec.Raw(b"1"),
        ts=AT_MS,
        gateway_id="gw-sender",
        conn_id="k-sender",
        **fields,  # type: ignore[arg-type]  # to, group, room or broadcast
    )


def claim(
    mid: str = "m1", client_id: str = "c1", reads: tuple[str, ...] = ()
) -> ClaimClientId:
    """The claim of a client's message from alice, in this batch's dedup window, reading the
    connections of ``reads`` (a 1:1 message's)."""
    return ClaimClientId("alice", client_id, mid, WINDOW, EXPIRE_AT_MS, reads=reads)


def to_bob(first_mid: str | None = None) -> Claimed:
    """The claim of a message to bob, bob online."""
    return Claimed(first_mid, BOB_ONLINE)


def look_up(
    batch: list[Inbound], rules: LookupRules = RULES
) -> tuple[BatchLookup, list[Request]]:
    lookup = BatchLookup(batch, AT_MS, rules)
    return lookup, lookup.requests()


def finish(lookup: BatchLookup, *rounds: list[Result]) -> list[Answer]:
    """Receive these rounds (each round's results; missing rounds: empty), then answer."""
    for results in rounds:
        lookup.receive(results)
    while not lookup.is_done:
        assert lookup.requests() == []
        lookup.receive([])
    answers = lookup.answers()
    assert answers.throttles == {}
    return list(answers.per_envelope)


# The rounds


def test_a_batch_takes_two_rounds_and_then_answers() -> None:
    lookup, requests = look_up([send()])

    assert requests == [claim(reads=("bob",))]
    assert not lookup.is_done
    lookup.receive([to_bob()])
    assert not lookup.is_done
    assert lookup.requests() == []  # nothing left to read: no round trip
    lookup.receive([])
    assert lookup.is_done
    assert lookup.answers().per_envelope == (Recipients(BOB_ONLINE.by_uid),)


def test_every_envelope_is_read_in_batch_order_in_one_round() -> None:
    # A send after an opened must see the connection: its reads come after the write.
    opened = ConnOpened(uid="bob", conn_id="k1", gateway_id="gw1")
    _, requests = look_up([opened, send(), Heartbeat(gateway_id="gw1", connections=1)])

    assert requests == [
        OpenConnection("bob", "k1", "gw1", 0, AT_MS),
        claim(reads=("bob",)),
        RecordHeartbeat("gw1", AT_MS),
    ]


def test_results_must_match_the_requests() -> None:
    lookup, _ = look_up([send()])

    with pytest.raises(ValueError, match="one result per request"):
        lookup.receive([to_bob(), BOB_ONLINE])


def test_answers_wait_for_every_round_and_rounds_end() -> None:
    lookup, _ = look_up([send()])
    with pytest.raises(ValueError, match="a round of requests is left"):
        lookup.answers()

    finish(lookup, [to_bob()])
    with pytest.raises(ValueError, match="every round was received"):
        lookup.receive([])


def test_a_result_of_another_request_is_an_error() -> None:
    lookup, _ = look_up([Heartbeat(gateway_id="gw1", connections=1)])

    with pytest.raises(ValueError, match="RecordHeartbeat gets a HeartbeatRecorded"):
        lookup.receive([Opened(True, False, False)])


def test_a_batch_that_reads_nothing_still_answers() -> None:
    lookup, requests = look_up([GatewayStopped(gateway_id="gw1")])

    assert requests == []
    assert finish(lookup) == [None]


# Connections, rooms, heartbeats, stored messages


def test_an_opened_connection_is_registered_under_the_uid_limit() -> None:
    rules = LookupRules(DEDUP_TTL_MS, DEBOUNCE_MS, max_connections_per_uid=5)
    fresh = ConnOpened(uid="bob", conn_id="k1", gateway_id="gw1")
    again = ConnOpened(uid="bob", conn_id="k2", gateway_id="gw1", reannounce=True)
    lookup, requests = look_up([fresh, again], rules)

    # A re-announced connection was counted when it first opened: no limit.
    assert requests == [
        OpenConnection("bob", "k1", "gw1", 5, AT_MS),
        OpenConnection("bob", "k2", "gw1", 0, AT_MS),
    ]
    first, refused = Opened(True, False, False), Opened(False, False, True)
    assert finish(lookup, [first, refused]) == [first, refused]


def test_a_closed_connection_leaves_presence_and_its_rooms_and_goes_offline_later() -> (
    None
):
    closed = ConnClosed(uid="bob", conn_id="k1", gateway_id="gw1", rooms=["r", "s"])
    lookup, requests = look_up([closed])

    assert requests == [
        RemoveConnection("bob", "k1", "gw1", AT_MS + DEBOUNCE_MS, ("r", "s"))
    ]
    assert finish(lookup, [WRITTEN]) == [None]


def test_room_changes_only_write() -> None:
    joined = RoomJoined(uid="bob", conn_id="k1", gateway_id="gw1", room="r")
    left = RoomLeft(uid="bob", conn_id="k1", gateway_id="gw1", room="r")
    lookup, requests = look_up([joined, left])

    assert requests == [CountInRoom("k1", "gw1", "r"), CountOutOfRoom("k1", "gw1", "r")]
    assert finish(lookup, [WRITTEN, WRITTEN]) == [None, None]


def test_a_heartbeat_is_recorded_and_tells_whether_the_gateway_was_known() -> None:
    lookup, requests = look_up([Heartbeat(gateway_id="gw1", connections=3)])

    assert requests == [RecordHeartbeat("gw1", AT_MS)]
    unknown = HeartbeatRecorded(was_known=False)
    assert finish(lookup, [unknown]) == [unknown]


def test_saved_rows_read_the_connections_of_each_uid_in_order() -> None:
    saved = Saved(uids=[SavedUid("carol", "m6"), SavedUid("bob", "m5")])
    lookup, requests = look_up([saved])

    assert requests == [ReadConnections(("carol", "bob"))]
    held = Connections((("carol", ()), ("bob", (PresenceEntry("k1", "gw1"),))))
    assert finish(lookup, [held]) == [held]


# Messages: retries, group members, rooms, broadcasts


def test_a_message_to_a_uid_claims_its_id_and_reads_the_recipient_at_once() -> None:
    lookup, requests = look_up([send()])

    assert requests == [claim(reads=("bob",))]  # one command
    assert finish(lookup, [to_bob()]) == [Recipients(BOB_ONLINE.by_uid)]


def test_a_retry_is_answered_with_the_mid_that_claimed_its_id_first() -> None:
    lookup, _ = look_up([send("m2", client_id="c7")])

    assert finish(lookup, [to_bob("m1")]) == [Retried("m1")]


def test_a_redelivery_with_the_same_mid_is_routed_again() -> None:
    lookup, _ = look_up([send("m1")])

    assert finish(lookup, [to_bob("m1")]) == [Recipients(BOB_ONLINE.by_uid)]


def test_a_group_message_reads_its_members_but_the_sender_in_a_second_round() -> None:
    lookup, requests = look_up([send(group="team")])

    assert requests == [claim(), ReadGroup("team", "alice")]
    lookup.receive(
        [Claimed(None), GroupRead(True, frozenset({"carol", "alice", "bob"}))]
    )
    assert lookup.requests() == [ReadConnections(("bob", "carol"))]
    members = Connections((("bob", (PresenceEntry("k1", "gw1"),)), ("carol", ())))
    assert finish(lookup, [members]) == [Recipients(members.by_uid)]


def test_a_group_message_from_a_non_member_is_refused_before_it_is_a_retry() -> None:
    lookup, _ = look_up([send(group="team")])

    lookup.receive([Claimed("m0"), GroupRead(False, frozenset({"bob"}))])
    assert lookup.requests() == []  # members of a refused message are not read
    assert finish(lookup) == [NOT_MEMBER]


def test_a_group_retry_reads_no_members() -> None:
    lookup, _ = look_up([send("m2", group="team")])

    lookup.receive([Claimed("m1"), GroupRead(True, frozenset({"bob"}))])
    assert lookup.requests() == []
    assert finish(lookup) == [Retried("m1")]


def test_a_group_of_the_sender_alone_has_no_recipient() -> None:
    lookup, _ = look_up([send(group="team")])

    lookup.receive([Claimed(None), GroupRead(True, frozenset({"alice"}))])
    assert lookup.requests() == []
    assert finish(lookup) == [Recipients(())]


def test_the_members_of_every_group_message_are_read_in_one_round() -> None:
    batch: list[Inbound] = [
        send("m1", group="a"),
        send("m2", client_id="c2"),
        send("m3", client_id="c3", group="b"),
    ]
    lookup, _ = look_up(batch)
    lookup.receive(
        [
            Claimed(None),
            GroupRead(True, frozenset({"bob"})),
            to_bob(),
            Claimed(None),
            GroupRead(True, frozenset({"carol", "dave"})),
        ]
    )

    assert lookup.requests() == [
        ReadConnections(("bob",)),
        ReadConnections(("carol", "dave")),
    ]
    carol_dave = Connections((("carol", ()), ("dave", ())))
    assert finish(lookup, [BOB_ONLINE, carol_dave]) == [
        Recipients(BOB_ONLINE.by_uid),
        Recipients(BOB_ONLINE.by_uid),
        Recipients(carol_dave.by_uid),
    ]


def test_a_room_message_reads_the_room_and_a_broadcast_the_gateways_once() -> None:
    batch: list[Inbound] = [
        send("m1", room="r"),
        send("m2", client_id="c2", broadcast=True),
        send("m3", client_id="c3", broadcast=True),
    ]
    lookup, requests = look_up(batch)

    assert requests == [
        claim("m1"),
        ReadRoom("r"),
        claim("m2", "c2"),
        claim("m3", "c3"),
        ReadGateways(),  # last, once for the whole batch
    ]
    counts = RoomCounts({"gw1": 2})
    results: list[Result] = [
        Claimed(None),
        counts,
        Claimed(None),
        Claimed(None),
        GatewaysRead({"gw1": AT_MS}),
    ]
    assert finish(lookup, results) == [counts, EVERYONE, EVERYONE]


def call(command: object, name: str, mid: str = "") -> Call:
    return Call(name, command, None, mid, AT_MS if mid else 0)  # type: ignore[arg-type]


def test_a_backend_send_claims_in_its_own_keyspace_and_is_no_member_of_anything() -> (
    None
):
    with_id = ApiSend(group="all", body=msgspec.Raw(b"1"), id="invoice-1")
    without_id = ApiSend(to="bob", body=msgspec.Raw(b"1"), sender="billing")
    batch: list[Inbound] = [call(with_id, "send", "m5"), call(without_id, "send", "m6")]
    lookup, requests = look_up(batch)

    assert requests == [
        ClaimClientId("system", "invoice-1", "m5", WINDOW, EXPIRE_AT_MS, True),
        ReadGroup("all", None),
        ReadConnections(("bob",)),
    ]
    lookup.receive(
        [Claimed(None), GroupRead(True, frozenset({"system", "bob"})), BOB_ONLINE]
    )
    assert lookup.requests() == [ReadConnections(("bob",))]  # its sender is no member


def test_a_backend_broadcast_reads_only_the_gateways() -> None:
    lookup, requests = look_up(
        [call(ApiBroadcast(body=msgspec.Raw(b"1")), "broadcast", "m7")]
    )

    assert requests == [ReadGateways()]
    assert finish(lookup, [GatewaysRead({})]) == [EVERYONE]


@pytest.mark.parametrize(
    ("command", "name", "request_", "result"),
    [
        (ApiKick(uid="kim"), "kick", ReadConnections(("kim",)), BOB_ONLINE),
        (
            ApiConnections(uid="kim"),
            "connections",
            ReadConnections(("kim",)),
            BOB_ONLINE,
        ),
        (
            ApiPresence(uids=["b", "a", "b"]),
            "presence",
            ReadConnections(("b", "a")),
            BOB_ONLINE,
        ),
        (ApiRoomCount(room="r"), "room.count", ReadRoom("r"), RoomCounts({"gw1": 1})),
    ],
)
def test_backend_queries_read_and_answer_with_the_result(
    command: object, name: str, request_: Request, result: Result
) -> None:
    lookup, requests = look_up([call(command, name)])

    assert requests == [request_]
    assert finish(lookup, [result]) == [result]


def test_a_refused_command_reads_nothing() -> None:
    lookup, requests = look_up([Refused(ErrorCode.UNKNOWN_COMMAND, "no", None)])

    assert requests == []
    assert finish(lookup) == [None]


# Presence queries, as the policy allows


ASKED = PresenceAsked(
    uid="alice",
    conn_id="k0",
    gateway_id="gw1",
    client_id="p1",
    uids=["bob", "carol", "bob"],
)


def test_everyone_reads_the_connections_of_each_distinct_uid() -> None:
    lookup, requests = look_up([ASKED])

    assert requests == [ReadConnections(("bob", "carol"))]
    held = Connections((("bob", ()), ("carol", ())))
    assert finish(lookup, [held]) == [held]


def test_shared_group_answers_only_the_uids_the_asker_may_see() -> None:
    rules = LookupRules(
        DEDUP_TTL_MS, DEBOUNCE_MS, presence_policy=PresencePolicy.SHARED_GROUP
    )
    asked = PresenceAsked(
        uid="alice",
        conn_id="k0",
        gateway_id="gw1",
        client_id="p1",
        uids=["bob", "alice", "carol"],
    )
    lookup, requests = look_up([asked], rules)

    assert requests == [ReadVisibility("alice", ("bob", "alice", "carol"))]
    bob, alice, carol = (PresenceEntry("k1", "gw1"),), (PresenceEntry("k0", "gw1"),), ()
    visibility = Visibility(
        "alice",
        frozenset({"team"}),
        (("bob", bob), ("alice", alice), ("carol", carol)),
        (frozenset({"other"}), frozenset({"team"}), frozenset({"team", "x"})),
    )
    # bob shares no group: answered as if offline; alice always sees herself
    assert finish(lookup, [visibility]) == [
        Connections((("alice", alice), ("carol", carol)))
    ]


def test_a_uid_without_groups_sees_only_itself() -> None:
    visibility = Visibility(
        "alice", frozenset(), (("alice", ()), ("bob", ())), (frozenset(), frozenset())
    )
    assert visible_connections(visibility) == Connections((("alice", ()),))


def test_nobody_reads_nothing_and_refuses() -> None:
    rules = LookupRules(
        DEDUP_TTL_MS, DEBOUNCE_MS, presence_policy=PresencePolicy.NOBODY
    )
    lookup, requests = look_up([ASKED], rules)

    assert requests == []
    assert finish(lookup) == [PRESENCE_FORBIDDEN]


# The rate per uid across gateways


RATE = UidRate(window_ms=1_000, burst=10)
RATED = LookupRules(DEDUP_TTL_MS, DEBOUNCE_MS, uid_rate=RATE)


def test_each_uid_adds_its_cost_once_per_batch_after_the_envelopes() -> None:
    batch: list[Inbound] = [send("m1"), ASKED, send("m2", client_id="c2")]
    _, requests = look_up(batch, RATED)

    window = AT_MS // RATE.window_ms
    assert requests[-1:] == [AddCost("alice", window, 3, 2 * RATE.window_ms)]
    assert requests[:-1] == [
        claim("m1", reads=("bob",)),
        ReadConnections(("bob", "carol")),
        claim("m2", "c2", reads=("bob",)),
    ]


def test_the_batch_that_takes_a_uid_over_its_rate_throttles_it_at_its_last_envelope() -> (
    None
):
    batch: list[Inbound] = [
        send("m1"),
        Heartbeat(gateway_id="gw1", connections=0),
        send("m2", client_id="c2"),
    ]
    lookup, _ = look_up(batch, RATED)
    seen = HeartbeatRecorded(was_known=True)
    lookup.receive(
        [
            to_bob(),
            seen,
            to_bob(),
            Counted("alice", 11),
        ]
    )
    lookup.receive([])

    answers = lookup.answers()
    assert answers.throttles == {2: Throttled("alice", 700)}  # 300 ms into its window
    # Routed all the same.
    assert answers.per_envelope[2] == Recipients(BOB_ONLINE.by_uid)


def test_a_uid_under_its_rate_is_not_throttled() -> None:
    lookup, _ = look_up([send()], RATED)
    lookup.receive([to_bob(), Counted("alice", 10)])
    lookup.receive([])

    assert lookup.answers().throttles == {}


# The seam itself


def test_every_request_has_the_type_of_its_result() -> None:
    assert set(RESULT_OF) == set(typing.get_args(Request))
    assert set(RESULT_OF.values()) <= set(typing.get_args(Result))


def test_a_result_is_checked_against_its_request() -> None:
    check_results([ReadRoom("r")], [RoomCounts({})])
    with pytest.raises(ValueError, match="ReadRoom gets a RoomCounts, not a Written"):
        check_results([ReadRoom("r")], [WRITTEN])
    with pytest.raises(TypeError, match="expected Claimed, got Written"):
        expect(Claimed, WRITTEN)
