"""The presence policy and the rate per uid across gateways, as the router decides them, and
as a gateway's session and fan-out apply them. No event loop, no network."""

import json

import msgspec
import pytest

from gateway import fanout
from gateway.effects import Publish, Reply
from gateway.limits import Limit
from gateway.settings import Settings as GatewaySettings
from proto import env, envelopes, frames, limits
from proto.codes import ErrorCode
from proto.envelopes import Delivery, DeliveryItem, PresenceAsked, Target
from proto.errors import SettingsError
from proto.limits import PresencePolicy
from router import delivery_items, routing
from router import limits as router_limits
from router.answers import (
    Answer,
)
from router.limits import Throttled, UidRate
from router.lookups import (
    BatchLookup,
    LookupRules,
)
from router.results import (
    Connections,
    PresenceEntry,
    Result,
    Visibility,
)
from router.settings import Settings as RouterSettings
from tests.support.tokens import TEST_JWT_SECRET
from tests.unit.test_routing import (
    LIVE_MS,
    NOW_MS,
    TTL_MS,
    delivery_of,
    frame_of,
    outgoing,
    route,
    sent_to,
)
from tests.unit.test_session import initialized

ASKED = PresenceAsked(
    uid="alice", conn_id="k0", gateway_id="gw1", client_id="p1", uids=["bob", "carol"]
)
BOB = ("bob", (PresenceEntry("k1", "gw1"),))
CAROL = ("carol", (PresenceEntry("k2", "gw1"),))


def ask(policy: PresencePolicy, results: list[Result]) -> routing.Plan:
    """Look the query up under this policy, Redis answering ``results``, then route it."""
    lookup = BatchLookup(
        [ASKED], NOW_MS, LookupRules(60_000, 0, presence_policy=policy)
    )
    lookup.receive(results)
    lookup.receive([])
    answers: list[Answer] = list(lookup.answers().per_envelope)
    return route([ASKED], answers)


def answer(plan: routing.Plan) -> frames.AnyServerFrame:
    [publish] = plan.deliveries
    [item] = delivery_of(publish).items
    assert item.targets == [Target("alice", "k0")]
    return frame_of(item)


# Presence policy


def test_everyone_sees_every_uid_online() -> None:
    plan = ask(PresencePolicy.EVERYONE, [Connections((BOB, CAROL))])
    assert answer(plan) == frames.PresenceResult(id="p1", online=["bob", "carol"])


def test_shared_group_answers_the_uids_not_visible_as_offline() -> None:
    groups = (frozenset({"other"}), frozenset({"team"}))
    visibility = Visibility("alice", frozenset({"team"}), (BOB, CAROL), groups)
    plan = ask(PresencePolicy.SHARED_GROUP, [visibility])
    assert answer(plan) == frames.PresenceResult(id="p1", online=["carol"])


def test_nobody_refuses_the_query_with_forbidden() -> None:
    plan = ask(PresencePolicy.NOBODY, [])
    error = answer(plan)
    assert isinstance(error, frames.Error)
    assert (error.code, error.id) == (ErrorCode.FORBIDDEN, "p1")


@pytest.mark.parametrize(
    ("asker_groups", "uid_groups", "uid", "expected"),
    [
        ({"team"}, {"team", "club"}, "bob", True),
        ({"team"}, {"club"}, "bob", False),
        (set(), set(), "bob", False),
        (set(), set(), "alice", True),  # the asker itself
    ],
)
def test_sees_presence_needs_a_shared_group(
    asker_groups: set[str], uid_groups: set[str], uid: str, expected: bool
) -> None:
    assert (
        router_limits.sees_presence("alice", uid, asker_groups, uid_groups) is expected
    )


def test_the_policy_is_a_router_setting() -> None:
    assert RouterSettings.from_env({}).presence_policy is PresencePolicy.EVERYONE
    settings = RouterSettings.from_env({"SWITCHBOARD_PRESENCE_POLICY": "shared_group"})
    assert settings.presence_policy is PresencePolicy.SHARED_GROUP
    with pytest.raises(SettingsError, match="SWITCHBOARD_PRESENCE_POLICY"):
        RouterSettings.from_env({"SWITCHBOARD_PRESENCE_POLICY": "friends"})


# What a frame costs


def test_a_presence_frame_costs_one_frame_per_ten_uids() -> None:
    assert limits.frame_cost() == 1
    assert [limits.frame_cost(n) for n in (0, 1, 10, 11, 100)] == [1, 1, 1, 2, 10]
    assert frames.MAX_PRESENCE_UIDS == 100


def test_the_session_reports_a_presence_frame_cost() -> None:
    session = initialized()
    uids = [f"u{n}" for n in range(25)]
    session.on_text(json.dumps({"type": "presence", "id": "p", "uids": uids}), NOW_MS)
    assert session.last_frame_cost == 3
    session.on_text('{"type":"ping"}', NOW_MS)
    assert session.last_frame_cost == 1


# The rate per uid across gateways


RATE = UidRate(window_ms=1_000, burst=10)


def test_uid_rate_is_off_at_zero() -> None:
    assert router_limits.uid_rate(0.0, 10) is None
    assert router_limits.uid_rate(10.0, 20) == UidRate(window_ms=2_000, burst=20)


def test_uid_costs_count_client_sends_and_weighted_presence() -> None:
    backend_send = msgspec.structs.replace(outgoing(mid="m9"), gateway_id="")
    many = msgspec.structs.replace(ASKED, uids=[f"u{n}" for n in range(30)])
    batch: list[routing.Inbound] = [
        outgoing(mid="m1"),
        ASKED,
        backend_send,
        outgoing(mid="m2"),
        many,
    ]
    assert router_limits.uid_costs(batch) == {"alice": (1 + 1 + 1 + 3, 4)}


@pytest.mark.parametrize(
    ("count", "cost", "expected_ms"),
    [
        (10, 10, 0),  # at the burst: fine
        (11, 1, 700),  # this batch went over: until the window ends
        (15, 10, 700),
        (12, 1, 0),  # over already: an earlier batch throttled it
    ],
)
def test_the_batch_that_goes_over_throttles_until_the_window_ends(
    count: int, cost: int, expected_ms: int
) -> None:
    now_ms = 1_700_000_000_300  # 300 ms into a window of 1000
    assert router_limits.throttle_for_ms(count, cost, RATE, now_ms) == expected_ms


def test_a_throttle_lasts_at_least_the_minimum() -> None:
    now_ms = 1_700_000_000_990
    assert router_limits.throttle_for_ms(11, 1, RATE, now_ms) == limits.THROTTLE_MIN_MS


def test_a_throttled_uid_is_announced_to_every_live_gateway_and_still_routed() -> None:
    send = outgoing(mid="m1")
    last_seen = {"gw1": LIVE_MS, "gw2": LIVE_MS, "gw-dead": NOW_MS - TTL_MS - 1}
    plan = route(
        [send],
        [sent_to(("kb", "gw2"))],
        last_seen_ms=last_seen,
        throttles={0: Throttled("alice", 700)},
    )

    items = {p.routing_key: delivery_of(p).items for p in plan.deliveries}
    assert set(items) == {"gw1", "gw2"}
    throttle = DeliveryItem(
        frame=msgspec.Raw(b"null"), targets=[], throttle_uid="alice", throttle_ms=700
    )
    assert items["gw1"] == [throttle]
    announced, message = items["gw2"]
    assert announced == throttle
    assert message.mid == "m1"  # the send is routed all the same
    assert plan.throttled == (Throttled("alice", 700),)


# The gateway's side


def test_fanout_reads_throttles_and_pushes_nothing_for_them() -> None:
    throttle = delivery_items.throttle_item("mallory", 500)
    delivery = Delivery(items=[throttle])
    decoded = envelopes.decode_delivery(envelopes.encode(delivery))
    assert fanout.throttles(decoded) == [("mallory", 500)]
    plan = fanout.plan_delivery(decoded, {"k1"}, {}, {"k1"})
    assert (plan.pushes, plan.handover, plan.stale) == ([], [], [])


def test_ready_frames_are_told_apart() -> None:
    assert fanout.is_ready(frames.encode(frames.Ready(uid="a", conn="k")))
    assert not fanout.is_ready(frames.encode(frames.Pong()))


def test_a_throttled_uid_gets_rate_limited_for_sends_and_presence_only() -> None:
    session = initialized()
    for text, client_id in [
        ('{"type":"send","id":"c1","to":"bob","body":1}', "c1"),
        ('{"type":"presence","id":"p1","uids":["bob"]}', "p1"),
    ]:
        [reply] = session.on_text(text, NOW_MS, is_uid_throttled=True)
        assert isinstance(reply, Reply)
        assert reply.limit is Limit.UID
        frame = json.loads(reply.frame)
        assert (frame["code"], frame["id"]) == (ErrorCode.RATE_LIMITED, client_id)
    [pong] = session.on_text('{"type":"ping","id":"x"}', NOW_MS, is_uid_throttled=True)
    assert isinstance(pong, Reply)
    assert pong.error_code is None
    acked = session.on_text('{"type":"ack","mids":["m1"]}', NOW_MS, True)
    assert acked
    assert not isinstance(acked[0], Reply)
    [publish] = session.on_text('{"type":"send","id":"c2","to":"bob","body":1}', NOW_MS)
    assert isinstance(publish, Publish)


def test_a_bytes_refusal_says_so() -> None:
    session = initialized()
    [reply] = session.on_rate_limited('{"id":"c1"}', False, Limit.BYTES)
    assert isinstance(reply, Reply)
    assert (reply.error_code, reply.limit) == (ErrorCode.RATE_LIMITED, Limit.BYTES)
    assert json.loads(reply.frame)["id"] == "c1"


# Settings


GATEWAY_BASE = {env.JWT_SECRET: TEST_JWT_SECRET}


def test_the_bytes_limit_is_on_by_default_and_zero_turns_it_off() -> None:
    settings = GatewaySettings.from_env(GATEWAY_BASE)
    assert (settings.rate_limit_bytes_per_s, settings.rate_limit_bytes_burst) == (
        262_144.0,
        1_048_576,
    )
    off = GatewaySettings.from_env({**GATEWAY_BASE, env.RATE_LIMIT_BYTES_PER_S: "0"})
    assert off.rate_limit_bytes_per_s == 0.0


@pytest.mark.parametrize(
    "overrides",
    [
        {env.RATE_LIMIT_BYTES_PER_S: "-1"},
        {env.RATE_LIMIT_BYTES_PER_S: "lots"},
        {env.RATE_LIMIT_BYTES_BURST: "1000"},  # smaller than the largest frame
    ],
)
def test_bad_bytes_limits_name_the_variable(overrides: dict[str, str]) -> None:
    with pytest.raises(SettingsError) as error:
        GatewaySettings.from_env({**GATEWAY_BASE, **overrides})
    assert next(iter(overrides)) in str(error.value)


def test_the_uid_rate_is_a_router_setting_and_zero_turns_it_off() -> None:
    settings = RouterSettings.from_env({})
    assert (settings.rate_limit_per_uid_per_s, settings.rate_limit_per_uid_burst) == (
        100.0,
        200,
    )
    off = RouterSettings.from_env({env.RATE_LIMIT_PER_UID_PER_S: "0"})
    assert router_limits.uid_rate(off.rate_limit_per_uid_per_s, 200) is None
    with pytest.raises(SettingsError, match=env.RATE_LIMIT_PER_UID_BURST):
        RouterSettings.from_env({env.RATE_LIMIT_PER_UID_BURST: "0"})
