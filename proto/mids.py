"""Message ids (mids): unique across the system and, for one sender, sorted in send order.

A mid is 26 lowercase hex digits: 12 of Unix milliseconds, 4 of a counter within that
millisecond, 10 of the producing process's node id. Comparing two mids as strings compares them
in time, so a sender's messages sort in send order within one gateway process, and across
gateways as far as their clocks agree (NTP keeps them within milliseconds; a reconnect takes
longer than that).
"""

import re

MID_PATTERN = re.compile(r"[0-9a-f]{26}")
NODE_HEX_DIGITS = 10
_MAX_SEQ = 0xFFFF


class MidFactory:
    """Makes strictly increasing mids for one process.

    Args:
        node: ``NODE_HEX_DIGITS`` hex digits, random per process (the caller draws them).
    """

    def __init__(self, node: str) -> None:
        if len(node) != NODE_HEX_DIGITS or not all(
            c in "0123456789abcdef" for c in node
        ):
            raise ValueError(
                f"node must be {NODE_HEX_DIGITS} lowercase hex digits, got {node!r}"
            )
        self._node = node
        self._last_ms = 0
        self._seq = 0

    def next_mid(self, now_ms: int) -> str:
        """Return a mid greater than every mid this factory made before.

        Args:
            now_ms: the current Unix time in milliseconds. A clock that steps back does not make
                mids go back: the factory keeps counting from its last millisecond.
        """
        if now_ms > self._last_ms:
            self._last_ms = now_ms
            self._seq = 0
        elif self._seq < _MAX_SEQ:
            self._seq += 1
        else:
            self._last_ms += 1
            self._seq = 0
        return f"{self._last_ms:012x}{self._seq:04x}{self._node}"


def mid_time_ms(mid: str) -> int:
    """The Unix milliseconds a mid was made at."""
    return int(mid[:12], 16)
