"""Client decisions that need no socket: reconnect delays, close codes, the memory of seen mids.

Nothing here awaits, reads a clock or draws randomness itself; ``client.py`` does the I/O.
"""

from collections import OrderedDict
from collections.abc import Callable

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
