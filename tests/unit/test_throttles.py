"""The uids a gateway refuses for a while (``gateway/throttles.py``), on a clock of our own."""

from gateway.throttles import PRUNE_AT, Throttles


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_uid_is_throttled_until_its_time_passes() -> None:
    clock = Clock()
    throttles = Throttles(clock)
    throttles.throttle("ann", 500)
    assert throttles.is_throttled("ann")
    assert not throttles.is_throttled("bob")
    assert not throttles.is_throttled(None)
    clock.now += 0.5
    assert not throttles.is_throttled("ann")


def test_a_shorter_throttle_does_not_cut_a_longer_one() -> None:
    clock = Clock()
    throttles = Throttles(clock)
    throttles.throttle("ann", 2000)
    throttles.throttle("ann", 100)
    clock.now += 1
    assert throttles.is_throttled("ann")


def test_dropping_the_expired_uids_keeps_the_throttled_ones() -> None:
    clock = Clock()
    throttles = Throttles(clock)
    for index in range(PRUNE_AT):
        throttles.throttle(f"u{index}", 10)
    throttles.throttle("kept", 10_000)
    clock.now += 1
    throttles.throttle("late", 10_000)  # prunes the expired ones
    assert throttles.is_throttled("kept")
    assert throttles.is_throttled("late")
