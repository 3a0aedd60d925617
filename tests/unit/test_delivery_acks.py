"""gateway.delivery_acks: which deliveries of a channel one multiple ack may cover."""

from hypothesis import given
from hypothesis import strategies as st

from gateway.delivery_acks import Acks, ChannelAcks


def delivered(*tags: int) -> ChannelAcks:
    acks = ChannelAcks()
    for tag in tags:
        acks.delivered(tag)
    return acks


def test_deliveries_finished_in_order_leave_as_one_multiple_ack() -> None:
    acks = delivered(1, 2, 3)
    for tag in (1, 2, 3):
        acks.finish(tag)
    assert acks.take() == Acks(up_to=3, singles=[])
    assert acks.is_empty


def test_a_delivery_behind_an_outstanding_one_is_acked_alone() -> None:
    acks = delivered(1, 2, 3, 4)
    acks.finish(1)
    acks.finish(3)
    assert acks.take() == Acks(up_to=1, singles=[3])
    # 2 and 4 are outstanding; a multiple ack on 4 would also cover 2.
    acks.finish(4)
    assert acks.take() == Acks(up_to=None, singles=[4])
    acks.finish(2)
    assert acks.take() == Acks(up_to=2, singles=[])
    assert acks.is_empty


def test_the_front_run_goes_past_what_was_acked_alone_before() -> None:
    acks = delivered(1, 2, 3)
    acks.finish(2)
    assert acks.take() == Acks(up_to=None, singles=[2])
    acks.finish(1)
    acks.finish(3)
    assert acks.take() == Acks(up_to=3, singles=[])


def test_a_rejected_delivery_does_not_stop_the_run_at_the_front() -> None:
    acks = delivered(1, 2, 3)
    acks.settled_elsewhere(1)
    acks.finish(2)
    assert acks.take() == Acks(up_to=2, singles=[])
    assert not acks.is_empty


def test_nothing_finished_acks_nothing() -> None:
    assert delivered(1, 2).take() == Acks(up_to=None, singles=[])
    assert ChannelAcks().take() == Acks(up_to=None, singles=[])


@given(st.permutations(list(range(1, 40))), st.integers(1, 8))
def test_every_delivery_is_acked_once_and_a_multiple_ack_covers_only_finished_ones(
    order: list[int], per_turn: int
) -> None:
    acks = delivered(*range(1, 40))
    finished: set[int] = set()
    acked: list[int] = []
    for start in range(0, len(order), per_turn):
        for tag in order[start : start + per_turn]:
            acks.finish(tag)
            finished.add(tag)
        taken = acks.take()
        if taken.up_to is not None:
            covered = [t for t in range(1, taken.up_to + 1) if t not in acked]
            assert set(covered) <= finished
            acked += covered
        assert set(taken.singles) <= finished
        acked += taken.singles
    assert sorted(acked) == list(range(1, 40))
    assert acks.is_empty
