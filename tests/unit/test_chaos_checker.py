"""tests/chaos/checker.py: the report of a run from its ledger. No I/O."""

from tests.chaos.checker import Accepted, Arrival, Ledger, report


def ledger_of(*arrivals: Arrival) -> Ledger:
    ledger = Ledger()
    ledger.accept(Accepted("u0", 1, "m1", frozenset({"u1"})))
    for arrival in arrivals:
        ledger.arrive(arrival)
    return ledger


def test_an_own_copy_is_neither_owed_nor_misrouted() -> None:
    """With history on, u0's next connection syncs the message u0 sent before it."""
    ledger = ledger_of(
        Arrival("u1", "m1", "u0", 1, 0.1, is_drain=False),
        Arrival("u0", "m1", "u0", 1, 0.2, is_drain=False),
    )
    result = report("s", ledger, recovery_s=1.0)
    assert (result.owed, result.delivered, result.lost) == (1, 1, 0)
    assert (result.misrouted, result.duplicates, result.remids) == (0, 0, 0)
    assert result.is_ok


def test_a_copy_at_a_uid_it_was_not_addressed_to_is_misrouted() -> None:
    ledger = ledger_of(
        Arrival("u1", "m1", "u0", 1, 0.1, is_drain=False),
        Arrival("u2", "m1", "u0", 1, 0.2, is_drain=False),
    )
    result = report("s", ledger, recovery_s=1.0)
    assert result.misrouted == 1
    assert not result.is_ok
