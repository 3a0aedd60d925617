"""What a gateway does with a delivery, decided without sockets or a broker."""

from collections.abc import Collection, Mapping

import msgspec

from gateway.fanout import DeliveryPlan, Push, plan_delivery
from proto.envelopes import Delivery, DeliveryItem, Target

FRAME = b'{"type":"message","mid":"m1"}'


def planned(
    items: list[DeliveryItem],
    connected: Collection[str],
    rooms: Mapping[str, Collection[str]] | None = None,
    initialized: Collection[str] = (),
) -> DeliveryPlan:
    return plan_delivery(Delivery(items=items), connected, rooms or {}, initialized)


def item(
    *targets: Target, durable: bool = True, stored: bool = False, close_code: int = 0
) -> DeliveryItem:
    return DeliveryItem(
        frame=msgspec.Raw(FRAME),
        targets=list(targets),
        mid="m1",
        durable=durable,
        stored=stored,
        close_code=close_code,
    )


def test_pushes_to_every_held_connection_and_waits_for_acks() -> None:
    plan = planned([item(Target("bob", "c1"), Target("bob", "c2"))], {"c1", "c2"})
    assert plan.pushes == [
        Push("c1", FRAME, "m1", True, 0),
        Push("c2", FRAME, "m1", True, 0),
    ]
    assert plan.handover == []
    assert plan.stale == []


def test_copies_for_missing_connections_go_to_the_offline_store() -> None:
    plan = planned([item(Target("bob", "c1"), Target("bob", "gone"))], {"c1"})
    assert [push.conn_id for push in plan.pushes] == ["c1"]
    (handed,) = plan.handover
    assert handed.targets == [Target("bob", "gone")]
    assert (handed.mid, handed.durable, handed.stored, bytes(handed.frame)) == (
        "m1",
        True,
        False,
        FRAME,
    )
    assert plan.stale == [Target("bob", "gone")]


def test_stored_messages_are_pushed_without_holding_and_never_handed_over_again() -> (
    None
):
    plan = planned(
        [item(Target("bob", "c1"), Target("bob", "gone"), stored=True)],
        {"c1"},
    )
    assert plan.pushes == [Push("c1", FRAME, "m1", False, 0, is_stored=True)]
    assert plan.handover == []


def test_transient_frames_to_missing_connections_are_dropped() -> None:
    plan = planned([item(Target("bob", "gone"), durable=False)], set())
    assert plan.pushes == []
    assert plan.handover == []
    assert plan.stale == [Target("bob", "gone")]


def test_close_code_travels_with_the_push() -> None:
    plan = planned(
        [item(Target("bob", "c1"), durable=False, close_code=4005)],
        {"c1"},
    )
    assert plan.pushes == [Push("c1", FRAME, "m1", False, 4005)]


def room_item(room: str, durable: bool = True) -> DeliveryItem:
    return DeliveryItem(
        frame=msgspec.Raw(FRAME), targets=[], mid="m1", durable=durable, room=room
    )


def test_room_item_reaches_the_connections_here_in_that_room_without_acks() -> None:
    rooms = {"live-1": {"c1", "c2"}, "live-2": {"c3"}}
    plan = planned([room_item("live-1")], {"c1", "c2", "c3", "c4"}, rooms)
    assert sorted(plan.pushes, key=lambda push: push.conn_id) == [
        Push("c1", FRAME, "m1", False, 0),
        Push("c2", FRAME, "m1", False, 0),
    ]
    # Nothing waits for an ack, so nothing can go to the offline store.
    assert (plan.handover, plan.stale) == ([], [])


def test_room_item_for_a_room_without_connections_here_pushes_nothing() -> None:
    plan = planned([room_item("empty")], {"c1"}, {"live-1": {"c1"}})
    assert (plan.pushes, plan.handover, plan.stale) == ([], [], [])


def test_room_members_that_are_gone_are_skipped_and_not_stale() -> None:
    plan = planned([room_item("live-1")], {"c1"}, {"live-1": {"c1", "gone"}})
    assert [push.conn_id for push in plan.pushes] == ["c1"]
    assert (plan.handover, plan.stale) == ([], [])


def test_broadcast_reaches_every_initialized_connection_without_acks() -> None:
    broadcast = DeliveryItem(
        frame=msgspec.Raw(FRAME), targets=[], mid="m1", durable=True, broadcast=True
    )
    plan = planned(
        [broadcast],
        connected={"c1", "c2", "fresh"},
        rooms={"live-1": {"c1"}},
        initialized={"c1", "c2"},
    )
    assert sorted(plan.pushes, key=lambda push: push.conn_id) == [
        Push("c1", FRAME, "m1", False, 0),
        Push("c2", FRAME, "m1", False, 0),
    ]
    assert (plan.handover, plan.stale) == ([], [])


def test_kick_pushes_the_kicked_frame_then_closes_only_its_targets() -> None:
    kicked = b'{"type":"kicked","reason":"abuse"}'
    kick = DeliveryItem(
        frame=msgspec.Raw(kicked),
        targets=[Target("kim", "c1"), Target("kim", "gone")],
        close_code=4005,
    )
    plan = planned([kick], {"c1", "c2"}, {"live-1": {"c1", "c2"}}, {"c1", "c2"})
    assert plan.pushes == [Push("c1", kicked, "", False, 4005)]
    # Not durable: a kicked connection that is gone already needs nothing stored.
    assert plan.handover == []
    assert plan.stale == [Target("kim", "gone")]


def test_reannouncements_list_connections_then_each_one_in_each_room() -> None:
    from gateway.fanout import reannouncements
    from proto import envelopes
    from proto.names import KEY_CONN_OPENED, KEY_ROOM_JOINED

    announced = reannouncements(
        "gw1",
        {"k2": "bob", "k1": "alice"},
        # k3 is not initialized (closing, say): not announced.
        {"lobby": {"k1", "k2", "k3"}, "empty": set()},
    )
    assert [a.routing_key for a in announced] == [
        KEY_CONN_OPENED,
        KEY_CONN_OPENED,
        KEY_ROOM_JOINED,
        KEY_ROOM_JOINED,
    ]
    first = envelopes.decode_conn_opened(announced[0].body)
    assert (first.uid, first.conn_id, first.reannounce) == ("alice", "k1", True)
    joined = [envelopes.decode_room_joined(a.body) for a in announced[2:]]
    assert [(j.gateway_id, j.room, j.uid, j.conn_id) for j in joined] == [
        ("gw1", "lobby", "alice", "k1"),
        ("gw1", "lobby", "bob", "k2"),
    ]


def test_only_a_reannounce_item_asks_for_reannouncements() -> None:
    from gateway.fanout import is_reannounce_requested

    assert not is_reannounce_requested(Delivery(items=[item(Target("bob", "k1"))]))
    request = DeliveryItem(frame=msgspec.Raw(b"null"), targets=[], reannounce=True)
    assert is_reannounce_requested(Delivery(items=[request]))


def test_each_numbered_copy_gets_its_seq_written_first() -> None:
    plan = planned(
        [item(Target("bob", "c1", 7), Target("alice", "c2", 3), Target("bob", "c3"))],
        {"c1", "c2", "c3"},
    )
    assert [(p.conn_id, p.frame) for p in plan.pushes] == [
        ("c1", b'{"seq":7,"type":"message","mid":"m1"}'),
        ("c2", b'{"seq":3,"type":"message","mid":"m1"}'),
        ("c3", FRAME),
    ]


def test_a_numbered_copy_is_handed_over_with_its_seq() -> None:
    plan = planned(
        [item(Target("bob", "c1", 7), Target("bob", "gone", 7), Target("al", "x", 2))],
        {"c1"},
    )
    assert [(bytes(h.frame), h.targets) for h in plan.handover] == [
        (b'{"seq":7,"type":"message","mid":"m1"}', [Target("bob", "gone", 7)]),
        (b'{"seq":2,"type":"message","mid":"m1"}', [Target("al", "x", 2)]),
    ]


def test_an_advance_item_pushes_nothing_and_hands_nothing_over() -> None:
    advance = DeliveryItem(
        frame=msgspec.Raw(b"null"),
        targets=[Target("alice", "c1", 4), Target("alice", "gone", 4)],
        mid="m1",
        advance=True,
    )
    plan = planned([advance], {"c1"})
    assert (plan.pushes, plan.handover, plan.stale) == ([], [], [])
