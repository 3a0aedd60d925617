"""The gateway's ack accounting (acks.py, admission.py), without sockets or a broker.

Each test drives the ledger the way the hub does: a delivery's pushes are admitted one by one,
pushed (or not: the client is too far behind), and the effects that come back are compared.
Times are plain numbers of seconds.
"""

from collections.abc import Sequence
from typing import TypeVar

import msgspec

from gateway.acks import (
    Account,
    AckDelivery,
    AskReplay,
    Capped,
    CaughtUp,
    DeadLetter,
    HandOver,
    Ledger,
    LedgerEffect,
    Relieved,
    TimedOut,
)
from gateway.admission import Admission, floor_after_window
from gateway.fanout import Push
from gateway.session import Session
from gateway.tokens import Identity
from proto.envelopes import DeliveryItem, ReplayRequest, ReplayTarget, Target
from proto.items import RefusedItem
from proto.mids import MidFactory

GATEWAY = "gw1"
ACK_TIMEOUT_S = 10.0


def mid(n: int) -> str:
    return f"m{n:04d}"  # mids sort in send order


def frame(m: str) -> bytes:
    return b'{"type":"message","mid":"' + m.encode() + b'"}'


def live(m: str) -> Push:
    return Push("", frame(m), m, awaits_ack=True, close_code=0)


def stored(m: str) -> Push:
    return Push("", frame(m), m, awaits_ack=False, close_code=0, is_stored=True)


def room(m: str) -> Push:
    return Push("", frame(m), m, awaits_ack=False, close_code=0)


def account(uid: str = "bob", conn_id: str = "c1") -> Account:
    session = Session(conn_id, GATEWAY, "secret", MidFactory("00000000aa"))
    session.identity = Identity(uid)
    return Account(session)


def ledger(max_unacked: int = 100, max_pinned: int = 500) -> Ledger:
    return Ledger(GATEWAY, max_unacked, ACK_TIMEOUT_S, max_pinned)


def deliver(
    acks: Ledger,
    delivery_id: int,
    pushes: Sequence[tuple[Account, Push]],
    *,
    now: float = 0.0,
    next_mid: str = "",
    from_mid: str = "",
    behind: Sequence[Account] = (),
    elsewhere: Sequence[DeliveryItem] = (),
    refused: Sequence[RefusedItem] = (),
) -> tuple[list[str], list[LedgerEffect]]:
    """What the hub does with one delivery; returns the mids pushed and the effects.

    ``behind``: accounts whose client is too far behind (its outbox refuses the frame).
    ``elsewhere``: copies whose connections are not on this gateway.
    """
    admission = Admission(acks, delivery_id, now, from_mid)
    pushed = []
    for holder, push in pushes:
        if not admission.admit(holder, push):
            continue
        if holder in behind:
            admission.not_pushed(holder, push)
            continue
        admission.pushed(holder, push)
        pushed.append(push.mid)
    for item in elsewhere:
        admission.hand_over(item)
    return pushed, admission.finish(next_mid, refused, "gateway.gw1")


T = TypeVar("T")


def of_type(effects: Sequence[LedgerEffect], kind: type[T]) -> list[T]:
    return [effect for effect in effects if isinstance(effect, kind)]


def handed_over(effects: Sequence[LedgerEffect]) -> list[str]:
    return [effect.item.mid for effect in of_type(effects, HandOver)]


def release_all(acks: Ledger, effects: Sequence[LedgerEffect]) -> list[LedgerEffect]:
    """The broker confirmed every handover (or dead-lettering) among ``effects``."""
    released: list[LedgerEffect] = []
    for effect in effects:
        if isinstance(effect, HandOver | DeadLetter):
            held = effect.held if isinstance(effect, HandOver) else (effect.held,)
            released.extend(acks.release(held))
    return released


# Held deliveries and their release


def test_a_delivery_is_acknowledged_once_every_copy_is_acknowledged() -> None:
    acks, bob, carol = ledger(), account("bob", "c1"), account("carol", "c2")
    pushed, effects = deliver(acks, 1, [(bob, live(mid(1))), (carol, live(mid(1)))])
    assert pushed == [mid(1), mid(1)]
    assert effects == []
    assert acks.on_client_ack(bob, [mid(1)]) == ([], [])
    assert acks.on_client_ack(carol, [mid(1)]) == ([], [AckDelivery(1)])
    assert acks.pins.pinned == set()


def test_the_wait_for_an_ack_runs_from_the_push_for_live_messages_only() -> None:
    acks, bob = ledger(), account()
    deliver(acks, 1, [(bob, live(mid(1)))], now=100.0)
    deliver(acks, 2, [(bob, stored(mid(2)))], now=100.5)
    deliver(acks, 3, [(bob, live(mid(3)))], now=101.0)
    # A stored message and a mid not held here are left out.
    assert acks.ack_waits(bob, [mid(1), mid(2), mid(3), mid(9)], 101.25) == [1.25, 0.25]
    acks.on_client_ack(bob, [mid(1)])
    assert acks.ack_waits(bob, [mid(1)], 102.0) == []  # released: not counted twice


def test_a_delivery_that_holds_nothing_is_acknowledged_at_once() -> None:
    acks, bob = ledger(), account()
    pushed, effects = deliver(acks, 1, [(bob, room(mid(1)))])
    assert pushed == [mid(1)]
    assert effects == [AckDelivery(1)]
    assert bob.unacked == {}


def test_a_redelivered_mid_is_held_once_and_one_ack_releases_both() -> None:
    acks, bob = ledger(max_unacked=1), account()
    deliver(acks, 1, [(bob, live(mid(1)))])
    # The broker delivers it again (a router redelivered its batch): the client has it, and the
    # connection is full, but the same mid is not a new message.
    pushed, effects = deliver(acks, 2, [(bob, live(mid(1)))], now=1.0)
    assert pushed == [mid(1)]
    assert effects == []
    assert list(bob.unacked) == [mid(1)]
    assert acks.on_client_ack(bob, [mid(1)]) == ([], [AckDelivery(1), AckDelivery(2)])


def test_acks_of_mids_not_held_here_go_to_the_store() -> None:
    acks, bob = ledger(), account()
    deliver(acks, 1, [(bob, live(mid(1)))])
    assert acks.on_client_ack(bob, [mid(7), mid(1)]) == ([mid(7)], [AckDelivery(1)])


def test_stored_messages_hold_nothing_and_their_acks_go_to_the_store() -> None:
    acks, bob = ledger(), account()
    pushed, effects = deliver(acks, 1, [(bob, stored(mid(1))), (bob, stored(mid(2)))])
    assert pushed == [mid(1), mid(2)]
    assert effects == [AckDelivery(1)]
    assert [u.is_stored for u in bob.unacked.values()] == [True, True]
    assert acks.on_client_ack(bob, [mid(2), mid(1)]) == ([mid(2), mid(1)], [])


def test_a_stored_copy_of_a_message_held_live_is_not_pushed_again() -> None:
    acks, bob = ledger(), account()
    deliver(acks, 1, [(bob, live(mid(1)))])
    pushed, effects = deliver(acks, 2, [(bob, stored(mid(1)))])
    assert pushed == []
    assert effects == [AckDelivery(2)]
    # Its row is in the store now: the ack goes on to delete it, and releases the delivery.
    assert acks.on_client_ack(bob, [mid(1)]) == ([mid(1)], [AckDelivery(1)])


def test_a_client_too_far_behind_gets_its_copy_handed_over() -> None:
    acks, bob, carol = ledger(), account("bob", "c1"), account("carol", "c2")
    pushes = [(bob, live(mid(1))), (carol, live(mid(1)))]
    pushed, effects = deliver(acks, 1, pushes, behind=[bob])
    assert pushed == [mid(1)]
    (handover,) = effects
    assert isinstance(handover, HandOver)
    assert handover.item == DeliveryItem(
        frame=msgspec.Raw(frame(mid(1))),
        targets=[Target("bob", "c1")],
        mid=mid(1),
        durable=True,
    )
    assert bob.unacked == {}
    # Acknowledged once the store has bob's copy and carol acknowledged hers.
    assert release_all(acks, effects) == []
    assert acks.on_client_ack(carol, [mid(1)]) == ([], [AckDelivery(1)])


def test_copies_for_connections_elsewhere_hold_the_delivery_until_confirmed() -> None:
    acks = ledger()
    item = DeliveryItem(
        frame=msgspec.Raw(frame(mid(1))), targets=[Target("dan", "c9")], mid=mid(1)
    )
    pushed, effects = deliver(acks, 1, [], elsewhere=[item])
    assert pushed == []
    assert handed_over(effects) == [mid(1)]
    assert release_all(acks, effects) == [AckDelivery(1)]


def test_refused_items_hold_the_delivery_until_dead_lettered() -> None:
    acks, bob = ledger(), account()
    refused = RefusedItem(b'{"items":[{}]}', "$.frame is missing", 1)
    _, effects = deliver(acks, 1, [(bob, room(mid(1)))], refused=[refused])
    (dead_letter,) = effects
    assert isinstance(dead_letter, DeadLetter)
    assert dead_letter.refused == (refused,)
    assert dead_letter.routing_key == "gateway.gw1"
    assert release_all(acks, effects) == [AckDelivery(1)]


def test_a_closed_connection_hands_over_what_it_held_but_not_stored_messages() -> None:
    acks, bob = ledger(), account()
    deliver(acks, 1, [(bob, live(mid(1))), (bob, stored(mid(2)))])
    deliver(acks, 2, [(bob, live(mid(3)))])
    handovers = acks.forget(bob)
    assert handed_over(handovers) == [mid(1), mid(3)]
    assert bob.unacked == {}
    assert release_all(acks, handovers) == [AckDelivery(1), AckDelivery(2)]
    assert acks.sweep(1000.0) == []


# The ack-timeout sweep


def test_the_sweep_hands_over_what_was_not_acknowledged_in_time() -> None:
    acks, bob, carol = ledger(), account("bob", "c1"), account("carol", "c2")
    deliver(acks, 1, [(bob, live(mid(1))), (carol, live(mid(1)))], now=0.0)
    deliver(acks, 2, [(bob, live(mid(2))), (bob, stored(mid(3)))], now=5.0)
    assert acks.on_client_ack(carol, [mid(1)]) == ([], [])
    assert acks.sweep(ACK_TIMEOUT_S - 0.1) == []
    effects = acks.sweep(ACK_TIMEOUT_S)
    assert handed_over(effects) == [mid(1)]
    assert of_type(effects, TimedOut) == [TimedOut("c1", 1)]
    assert release_all(acks, effects) == [AckDelivery(1)]
    # The stored message timed out too: it is dropped here, and its row stays in the store.
    effects = acks.sweep(5.0 + ACK_TIMEOUT_S)
    assert handed_over(effects) == [mid(2)]
    assert of_type(effects, TimedOut) == [TimedOut("c1", 2)]
    assert bob.unacked == {}
    assert release_all(acks, effects) == [AckDelivery(2)]
    assert acks.sweep(1000.0) == []


def test_a_message_acknowledged_in_time_is_not_swept() -> None:
    acks, bob = ledger(), account()
    deliver(acks, 1, [(bob, live(mid(1)))])
    acks.on_client_ack(bob, [mid(1)])
    assert acks.sweep(ACK_TIMEOUT_S) == []


def test_a_client_that_let_a_window_time_out_may_take_the_next_one() -> None:
    acks, bob = ledger(max_unacked=4), account()
    window = [(bob, stored(mid(n))) for n in range(1, 5)]
    _, effects = deliver(acks, 1, window, next_mid=mid(5))
    assert of_type(effects, AskReplay) == []  # the connection holds the whole cap
    effects = acks.sweep(ACK_TIMEOUT_S)
    assert effects == [
        TimedOut("c1", 4),
        AskReplay("c1", replay_request(from_mid=mid(5), limit=4)),
    ]


# The per-connection cap, and the order of what passes it


def replay_request(from_mid: str, limit: int) -> ReplayRequest:
    return ReplayRequest(
        uid="bob",
        targets=[ReplayTarget(GATEWAY, "c1")],
        from_mid=from_mid,
        limit=limit,
    )


def test_live_copies_past_the_cap_go_to_the_store_and_later_ones_follow_them() -> None:
    acks, bob = ledger(max_unacked=2), account()
    deliver(acks, 1, [(bob, live(mid(1)))])
    deliver(acks, 2, [(bob, live(mid(2)))])
    pushed, effects = deliver(acks, 3, [(bob, live(mid(3)))])
    assert pushed == []
    assert handed_over(effects) == [mid(3)]
    assert of_type(effects, Capped) == [Capped("c1", 1, 2)]
    assert release_all(acks, effects) == [AckDelivery(3)]

    # Room below the cap again, but a live message must not overtake the one in the store.
    assert acks.on_client_ack(bob, [mid(1)]) == ([], [AckDelivery(1)])
    pushed, effects = deliver(acks, 4, [(bob, live(mid(4)))])
    assert pushed == []
    assert of_type(effects, Capped) == [Capped("c1", 1, 1)]
    release_all(acks, effects)

    # The store replays them (after the Saved of each) in mid order, up to the cap.
    pushed, effects = deliver(acks, 5, [(bob, stored(mid(3))), (bob, stored(mid(4)))])
    assert pushed == [mid(3)]
    assert of_type(effects, CaughtUp) == []
    assert bob.replay_from == mid(4)
    # Once the client acknowledged half the cap, it asks for the rest itself.
    elsewhere, effects = acks.on_client_ack(bob, [mid(2), mid(3)])
    assert elsewhere == [mid(3)]
    assert effects == [AckDelivery(2), AskReplay("c1", replay_request(mid(4), 2))]
    pushed, effects = deliver(acks, 6, [(bob, stored(mid(4)))])
    assert pushed == [mid(4)]
    assert effects == [CaughtUp("c1"), AckDelivery(6)]

    # Every message that went to the store came back: live messages go live again.
    pushed, _ = deliver(acks, 7, [(bob, live(mid(5)))])
    assert pushed == [mid(5)]


def test_a_window_that_starts_after_a_row_still_to_push_waits_for_it() -> None:
    acks, bob = ledger(max_unacked=4), account()
    for n in range(1, 5):
        deliver(acks, n, [(bob, live(mid(n)))])
    _, effects = deliver(acks, 5, [(bob, live(mid(5)))])
    assert handed_over(effects) == [mid(5)]
    release_all(acks, effects)
    # The Saved of the fifth brings its window while bob holds four: cut.
    pushed, _ = deliver(acks, 6, [(bob, stored(mid(5)))], from_mid=mid(5))
    assert pushed == []
    assert acks.on_client_ack(bob, [mid(1)]) == ([], [AckDelivery(1)])
    _, effects = deliver(acks, 7, [(bob, live(mid(6)))])
    assert handed_over(effects) == [mid(6)]
    release_all(acks, effects)

    # The window of the sixth finds room, but the fifth waits: not pushed.
    pushed, effects = deliver(acks, 8, [(bob, stored(mid(6)))], from_mid=mid(6))
    assert pushed == []
    assert effects == [AckDelivery(8)]
    assert bob.replay_from == mid(5)
    # Half the cap acknowledged: the window from the fifth brings both, in order.
    _, effects = acks.on_client_ack(bob, [mid(2)])
    assert effects == [AckDelivery(2), AskReplay("c1", replay_request(mid(5), 2))]
    window = [(bob, stored(mid(5))), (bob, stored(mid(6)))]
    pushed, effects = deliver(acks, 9, window, from_mid=mid(5))
    assert pushed == [mid(5), mid(6)]
    assert effects == [CaughtUp("c1"), AckDelivery(9)]


def test_a_window_read_before_a_later_handover_does_not_let_a_later_one_overtake() -> (
    None
):
    acks, bob = ledger(max_unacked=2), account()
    deliver(acks, 1, [(bob, live(mid(1)))])
    deliver(acks, 2, [(bob, live(mid(2)))])
    release_all(acks, deliver(acks, 3, [(bob, live(mid(3)))])[1])
    acks.on_client_ack(bob, [mid(1), mid(2)])
    release_all(acks, deliver(acks, 4, [(bob, live(mid(4)))])[1])
    # The window of the third was read before the fourth was stored: it ends at the third.
    pushed, _ = deliver(acks, 5, [(bob, stored(mid(3)))], from_mid=mid(3))
    assert pushed == [mid(3)]
    assert bob.overflow_mid == mid(4)
    # A window starting after the third (a fifth handed over, stored apart) waits: the
    # fourth may come before it. The window asked from the third brings them in order.
    release_all(acks, deliver(acks, 6, [(bob, live(mid(5)))])[1])
    pushed, effects = deliver(acks, 7, [(bob, stored(mid(5)))], from_mid=mid(5))
    assert pushed == []
    assert of_type(effects, AskReplay) == [AskReplay("c1", replay_request(mid(3), 1))]
    window = [(bob, stored(mid(n))) for n in (3, 4, 5)]
    pushed, _ = deliver(acks, 8, window, from_mid=mid(3))
    assert pushed == [mid(4)]  # the cap of two: the third is not acknowledged yet


def test_a_cut_window_leaves_its_cut_as_the_floor() -> None:
    assert floor_after_window("m5", "m4", overflow_mid="m9") == "m5"
    assert floor_after_window("m5", "m4", overflow_mid="") == "m5"


def test_a_whole_window_past_every_handover_leaves_no_floor() -> None:
    assert floor_after_window("", "m9", overflow_mid="m9") == ""
    assert floor_after_window("", "m9", overflow_mid="") == ""


def test_a_whole_window_read_before_later_handovers_leaves_its_last_as_the_floor() -> (
    None
):
    # m7 to m9 were handed over after the store read the window: a window starting after m6
    # waits for one from m6 on.
    assert floor_after_window("", "m6", overflow_mid="m9") == "m6"


def test_the_cap_counts_each_connection_apart() -> None:
    acks, bob, carol = (
        ledger(max_unacked=1),
        account("bob", "c1"),
        account("carol", "c2"),
    )
    deliver(acks, 1, [(bob, live(mid(1)))])
    pushed, effects = deliver(acks, 2, [(bob, live(mid(2))), (carol, live(mid(2)))])
    assert pushed == [mid(2)]
    assert handed_over(effects) == [mid(2)]
    assert of_type(effects, HandOver)[0].item.targets == [Target("bob", "c1")]
    assert of_type(effects, Capped) == [Capped("c1", 1, 1)]


def test_messages_for_others_are_not_held_against_the_cap() -> None:
    acks, bob = ledger(max_unacked=1), account()
    deliver(acks, 1, [(bob, live(mid(1)))])
    pushed, effects = deliver(acks, 2, [(bob, room(mid(2)))])
    assert pushed == [mid(2)]
    assert effects == [AckDelivery(2)]


# Replay windows


def test_a_window_past_the_cap_is_cut_at_the_first_message_not_pushed() -> None:
    acks, bob = ledger(max_unacked=2), account()
    window = [(bob, stored(mid(n))) for n in range(1, 5)]
    pushed, effects = deliver(acks, 1, window, next_mid=mid(5))
    assert pushed == [mid(1), mid(2)]
    assert bob.replay_from == mid(3)  # not the window's next_mid: the cut comes first
    assert effects == [AckDelivery(1)]


def test_the_next_window_is_asked_for_once_half_the_cap_is_acknowledged() -> None:
    acks, bob = ledger(max_unacked=4), account()
    window = [(bob, stored(mid(n))) for n in range(1, 5)]
    deliver(acks, 1, window, next_mid=mid(5))
    assert bob.replay_from == mid(5)
    assert acks.on_client_ack(bob, [mid(1)]) == ([mid(1)], [])
    # Two left of four: half the cap is free; the window is what it leaves free.
    assert acks.on_client_ack(bob, [mid(2)]) == (
        [mid(2)],
        [AskReplay("c1", replay_request(mid(5), 2))],
    )
    assert bob.replay_from == ""
    assert acks.on_client_ack(bob, [mid(3)]) == ([mid(3)], [])  # asked once


def test_a_window_that_fits_asks_for_the_next_at_once() -> None:
    acks, bob = ledger(max_unacked=10), account()
    _, effects = deliver(acks, 1, [(bob, stored(mid(1)))], next_mid=mid(2))
    assert effects == [AskReplay("c1", replay_request(mid(2), 9)), AckDelivery(1)]


def test_a_closing_connection_asks_for_no_window() -> None:
    acks, bob = ledger(max_unacked=2), account()
    window = [(bob, stored(mid(1))), (bob, stored(mid(2)))]
    deliver(acks, 1, window, next_mid=mid(3))
    bob.is_closing = True
    assert acks.on_client_ack(bob, [mid(1)]) == ([mid(1)], [])
    assert bob.replay_from == mid(3)


def test_a_window_reaching_every_connection_of_the_uid_is_cut_for_each() -> None:
    acks, bob, bob_too = (
        ledger(max_unacked=1),
        account("bob", "c1"),
        account("bob", "c2"),
    )
    deliver(acks, 1, [(bob, live(mid(9)))])
    window = [(bob, stored(mid(1))), (bob_too, stored(mid(1)))]
    pushed, _ = deliver(acks, 2, window, next_mid=mid(2))
    assert pushed == [mid(1)]  # bob_too had room
    assert (bob.replay_from, bob_too.replay_from) == (mid(1), mid(2))


# The pressure relief: pinned deliveries near the prefetch


def test_pinned_deliveries_past_the_mark_hand_over_the_oldest_copies() -> None:
    # High mark 3, low mark 2: the fourth pinned delivery frees two.
    acks = ledger(max_pinned=3)
    hoarders = [account(f"h{n}", f"c{n}") for n in range(4)]
    for n, hoarder in enumerate(hoarders[:3]):
        _, effects = deliver(acks, n, [(hoarder, live(mid(n)))], now=float(n))
        assert effects == []
    _, relief = deliver(acks, 3, [(hoarders[3], live(mid(3)))], now=3.0)
    assert handed_over(relief) == [mid(0), mid(1)]
    assert relief[-1] == Relieved(pinned=4, copies=2, deliveries=2)

    # The clients keep what they were sent: their acks now go to the store, and the replay
    # that follows the store's Saved is not pushed a second time.
    assert hoarders[0].unacked[mid(0)].is_stored
    assert acks.on_client_ack(hoarders[0], [mid(0)]) == ([mid(0)], [])
    pushed, _ = deliver(acks, 4, [(hoarders[1], stored(mid(1)))], now=4.0)
    assert pushed == []

    # While the handovers wait for their confirms, their deliveries count as gone already.
    _, effects = deliver(acks, 5, [(hoarders[3], live(mid(5)))], now=5.0)
    assert effects == []
    assert release_all(acks, relief) == [AckDelivery(0), AckDelivery(1)]
    assert len(acks.pins.pinned) == 3
    assert acks.pins.freeing == set()


def test_a_relief_hands_over_every_copy_of_the_deliveries_it_touches() -> None:
    acks = ledger(max_pinned=3)  # frees two deliveries at the fourth
    bob, carol = account("bob", "c1"), account("carol", "c2")
    deliver(acks, 0, [(bob, live(mid(0)))], now=0.0)
    deliver(acks, 1, [(bob, live(mid(1))), (carol, live(mid(1)))], now=1.0)
    deliver(acks, 2, [(carol, live(mid(2)))], now=2.0)
    _, effects = deliver(acks, 3, [(bob, live(mid(3)))], now=3.0)
    # Two deliveries are enough after bob's copy of the second, but carol's copy holds it too.
    assert sorted(handed_over(effects)) == [mid(0), mid(1), mid(1)]
    assert effects[-1] == Relieved(pinned=4, copies=3, deliveries=2)
    assert release_all(acks, effects) == [AckDelivery(0), AckDelivery(1)]
