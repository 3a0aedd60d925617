"""The order in which the Python client tries its gateway URLs (``policy.url_order``). No I/O."""

import random
from collections import Counter
from collections.abc import Callable

from switchboard_client import Client
from switchboard_client.policy import url_order

URLS = [f"ws://gateway-{n}:8001/ws" for n in range(4)]


def draws(*values: float) -> Callable[[], float]:
    """A random source that returns these draws in turn."""
    it = iter(values)
    return lambda: next(it)


def test_the_order_is_a_permutation_of_the_urls_drawn_from_the_random_source() -> None:
    # Fisher-Yates from the last place: 0.0 always swaps with the first.
    assert url_order(URLS, draws(0.0, 0.0, 0.0)) == [
        URLS[1],
        URLS[2],
        URLS[3],
        URLS[0],
    ]
    # The top of [0, 1) keeps each URL in its place.
    assert url_order(URLS, draws(0.999, 0.999, 0.999)) == URLS
    seeded = random.Random(7)
    for _ in range(100):
        assert sorted(url_order(URLS, seeded.random)) == sorted(URLS)
    assert url_order(URLS[:1], draws()) == URLS[:1]


def test_the_clients_of_a_lost_gateway_spread_over_the_others() -> None:
    # Each client reconnects to the URL after its current one in its own order: the
    # successors of one gateway are every other gateway alike, not one of them for all.
    seeded = random.Random(11)
    successors: Counter[str] = Counter()
    for _ in range(3_000):
        order = url_order(URLS, seeded.random)
        successors[order[(order.index(URLS[0]) + 1) % len(order)]] += 1
    assert set(successors) == set(URLS[1:])
    for url in URLS[1:]:
        assert 0.28 < successors[url] / 3_000 < 0.39


def test_a_client_shuffles_its_urls_unless_told_not_to() -> None:
    shuffled = Client(URLS, "token", random=draws(0.0, 0.0, 0.0))
    assert shuffled.urls == [URLS[1], URLS[2], URLS[3], URLS[0]]
    in_order = Client(URLS, "token", random=draws(0.0, 0.0, 0.0), shuffle_urls=False)
    assert in_order.urls == URLS
    assert Client(URLS[0], "token").urls == URLS[:1]
