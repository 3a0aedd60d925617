"""Client decisions that need no socket: reconnect delays, close codes, the memory of seen mids,
when to refresh the token.

Nothing here awaits, reads a clock or draws randomness itself; ``client.py`` does the I/O.
"""

import base64
import binascii
import json
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence

GOING_AWAY = 1001
TERMINAL_CLOSE_CODES = frozenset({4003, 4005})
"""Invalid token, kicked: the server's ``proto.codes.TERMINAL_CLOSE_CODES``."""


def is_terminal(close_code: int | None) -> bool:
    """Whether a close code forbids reconnecting on our own."""
    return close_code in TERMINAL_CLOSE_CODES


def reconnect_delay_s(
    attempt: int,
    close_code: int | None,
    base_s: float,
    max_s: float,
    random: Callable[[], float],
) -> float:
    """Seconds to wait before reconnect number ``attempt`` (0 for the first after a drop).

    Exponential backoff with full jitter (a uniform draw in ``[0, min(max, base * 2**attempt)]``),
    except after a going-away close: that gateway is shutting down cleanly, so the first
    reconnect to another gateway happens at once.

    Args:
        attempt: reconnects tried since the last connection that reached ``ready``.
        close_code: how the last connection closed, if it got a close frame.
        base_s: the ceiling of the first jittered delay.
        max_s: the cap of every delay.
        random: a draw in ``[0, 1)``.
    """
    if close_code == GOING_AWAY and attempt == 0:
        return 0.0
    ceiling = min(max_s, base_s * 2.0 ** min(attempt, 32))
    return ceiling * random()


def open_deadline_s(attempt: int, base_s: float, max_s: float) -> float:
    """Seconds that a connection attempt is given for its handshake, and as much again for
    ``ready``, after ``attempt`` attempts that failed since the last ``ready``.

    ``base_s`` for the first; each attempt after one that failed gets twice the one before, up
    to ``max_s``. An attempt that runs out of time was most often queued behind other logins
    (a gateway taking in the clients of one that went away): giving up throws away the work the
    gateway had begun, and the next attempt joins the back of the same queue. Waiting longer
    lets the queue drain instead of refilling it.

    Args:
        attempt: connection attempts that ended without ``ready`` since the last one that
            reached it (0: the first attempt, or the first after a drop).
        base_s: the first attempt's deadline.
        max_s: the cap of every deadline.
    """
    return min(max_s, base_s * 2.0 ** min(attempt, 32))


def url_order(urls: Sequence[str], random: Callable[[], float]) -> list[str]:
    """The order in which a client tries its gateway URLs: a permutation drawn once.

    Each reconnect takes the next URL of this order. Drawn per client, it sends the clients of
    a gateway that went away to all the others alike: with one order for every client (the
    list as given), they would all move to the same next gateway at once.

    Args:
        urls: the gateway URLs, as given.
        random: a draw in ``[0, 1)``.
    """
    order = list(urls)
    for last in range(len(order) - 1, 0, -1):  # Fisher-Yates
        chosen = min(int(random() * (last + 1)), last)
        order[last], order[chosen] = order[chosen], order[last]
    return order


def token_expiry_s(token: str) -> float | None:
    """The ``exp`` of a JWT (Unix seconds), read without verifying it; None when it has none.

    The client only schedules its refresh by it: the gateway verifies the token.
    """
    try:
        payload = token.split(".")[1]
        claims = json.loads(
            base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        )
    except (IndexError, ValueError, binascii.Error):
        return None
    expires = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(expires, bool) or not isinstance(expires, int | float):
        return None
    return float(expires) if math.isfinite(expires) else None


def refresh_delay_s(expires_s: float, now_s: float, before_s: float) -> float:
    """Seconds to wait before refreshing a token that expires at ``expires_s``.

    ``before_s`` ahead of ``exp``; a token that has less than twice that left is refreshed
    half-way through what it has left, so that a short-lived one is not refreshed at once.
    """
    remaining_s = expires_s - now_s
    if remaining_s > 2 * before_s:
        return remaining_s - before_s
    return max(0.0, remaining_s / 2)


def refresh_retry_delay_s(expires_s: float, now_s: float) -> float:
    """Seconds to wait after a refresh failed: half of what is left, at least a second.

    Once ``exp`` passes, the gateway closes the connection (4004) and the client reconnects
    with a fresh token.
    """
    return max(1.0, (expires_s - now_s) / 2)


class SeenMids:
    """The most recent mids handed to the application, oldest forgotten first (an LRU)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._mids: OrderedDict[str, bool] = OrderedDict()
        """mid -> whether the application finished handling it (and it was acknowledged)."""

    def __contains__(self, mid: str) -> bool:
        return mid in self._mids

    def add(self, mid: str) -> None:
        self._mids[mid] = False
        self._mids.move_to_end(mid)
        while len(self._mids) > self._capacity:
            self._mids.popitem(last=False)

    def mark_handled(self, mid: str) -> None:
        if mid in self._mids:
            self._mids[mid] = True

    def is_handled(self, mid: str) -> bool:
        return self._mids.get(mid, False)

    def __len__(self) -> int:
        return len(self._mids)
