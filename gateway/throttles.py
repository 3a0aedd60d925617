"""The uids whose frames this gateway refuses for a while: the routers found them over their rate
across gateways (``DeliveryItem.throttle_uid``, ``router/limits.py``) and told every gateway.

Pure: the time comes from the clock it is given. The hub records what the routers say
(``throttle``); ``ws.py`` asks before handing a frame to its session (``is_throttled``), which
refuses the uid's ``send`` and ``presence`` frames while it is.
"""

from collections.abc import Callable

PRUNE_AT = 1024
"""Throttled uids remembered before the expired ones are dropped."""


class Throttles:
    """Each throttled uid with the time until which its frames are refused."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._until: dict[str, float] = {}
        """uid -> until when (``clock``) its frames are refused."""

    def is_throttled(self, uid: str | None) -> bool:
        """Whether the routers asked, a moment ago, to refuse this uid's frames."""
        if uid is None or not self._until:
            return False
        until = self._until.get(uid)
        if until is None:
            return False
        if until > self._clock():
            return True
        del self._until[uid]
        return False

    def throttle(self, uid: str, for_ms: int) -> None:
        """Refuse the uid's frames for ``for_ms`` from now (on every connection here)."""
        now = self._clock()
        if len(self._until) >= PRUNE_AT:
            self._until = {u: t for u, t in self._until.items() if t > now}
        until = now + for_ms / 1000
        self._until[uid] = max(until, self._until.get(uid, until))
