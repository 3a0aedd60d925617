"""What a gateway does with a delivery, decided without sockets or a broker."""

import msgspec

from gateway.fanout import Push, plan_delivery
from proto.envelopes import Delivery, DeliveryItem, Target

FRAME = b'{"type":"message","mid":"m1"}'


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
    plan = plan_delivery(
        Delivery(items=[item(Target("bob", "c1"), Target("bob", "c2"))]), {"c1", "c2"}
    )
    assert plan.pushes == [
        Push("c1", FRAME, "m1", True, 0),
        Push("c2", FRAME, "m1", True, 0),
    ]
    assert plan.handover == []
    assert plan.stale == []


def test_copies_for_missing_connections_go_to_the_offline_store() -> None:
    plan = plan_delivery(
        Delivery(items=[item(Target("bob", "c1"), Target("bob", "gone"))]), {"c1"}
    )
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
    plan = plan_delivery(
        Delivery(items=[item(Target("bob", "c1"), Target("bob", "gone"), stored=True)]),
        {"c1"},
    )
    assert plan.pushes == [Push("c1", FRAME, "m1", False, 0)]
    assert plan.handover == []


def test_transient_frames_to_missing_connections_are_dropped() -> None:
    plan = plan_delivery(
        Delivery(items=[item(Target("bob", "gone"), durable=False)]), set()
    )
    assert plan.pushes == []
    assert plan.handover == []
    assert plan.stale == [Target("bob", "gone")]


def test_close_code_travels_with_the_push() -> None:
    plan = plan_delivery(
        Delivery(items=[item(Target("bob", "c1"), durable=False, close_code=4005)]),
        {"c1"},
    )
    assert plan.pushes == [Push("c1", FRAME, "m1", False, 4005)]
