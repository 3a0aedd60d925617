"""liveness.py: which gateways are live, dead or to be swept. No event loop, no network."""

import pytest

from router import liveness
from router.requests import (
    ForgetGateway,
    RemoveConnection,
)
from router.results import (
    GatewayRecord,
)

NOW_MS = 1_700_000_000_000
TTL_MS = 15_000
LIVE_MS = NOW_MS - 1_000
DEAD_MS = NOW_MS - TTL_MS - 1


def test_liveness() -> None:
    assert liveness.is_live(None, NOW_MS, TTL_MS)  # not seen yet: may be brand new
    assert liveness.is_live(NOW_MS - TTL_MS, NOW_MS, TTL_MS)
    assert not liveness.is_live(NOW_MS - TTL_MS - 1, NOW_MS, TTL_MS)
    last_seen = {"a": LIVE_MS, "b": DEAD_MS, "c": DEAD_MS - 10, "d": NOW_MS}
    assert liveness.dead_gateways(last_seen, NOW_MS, TTL_MS) == ["c", "b"]


@pytest.mark.parametrize(
    ("is_unknown", "connections", "expected"),
    [(True, 3, True), (True, 0, False), (False, 3, False), (False, 0, False)],
)
def test_should_reannounce_only_an_unknown_gateway_with_connections(
    is_unknown: bool, connections: int, expected: bool
) -> None:
    assert liveness.should_reannounce(is_unknown, connections) is expected


@pytest.mark.parametrize(
    ("last_seen_ms", "stale_before_ms", "expected"),
    [
        (DEAD_MS, NOW_MS - TTL_MS, True),  # still dead
        (LIVE_MS, NOW_MS - TTL_MS, False),  # came back since it was found dead
        (None, NOW_MS - TTL_MS, False),  # swept by another router already
        (LIVE_MS, None, True),  # it said it stopped
        (None, None, True),
    ],
)
def test_a_gateway_found_dead_is_swept_only_if_it_still_is(
    last_seen_ms: int | None, stale_before_ms: int | None, expected: bool
) -> None:
    assert liveness.is_to_sweep(last_seen_ms, stale_before_ms) is expected


def test_a_sweep_removes_each_connection_then_the_gateway_and_its_rooms() -> None:
    record = GatewayRecord(DEAD_MS, {"k1": "bob", "k2": "carol"}, frozenset({"r"}))

    assert liveness.sweep_requests("gw1", record, NOW_MS + 2_000) == [
        RemoveConnection("bob", "k1", "gw1", NOW_MS + 2_000),
        RemoveConnection("carol", "k2", "gw1", NOW_MS + 2_000),
        ForgetGateway("gw1", ("r",)),
    ]
