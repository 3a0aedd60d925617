"""Logins on their way: from a connection's ``init`` (its ``conn.opened`` publish) until the
router's ``ready`` or refusal, or the connection's end.

A gateway that holds ``SWITCHBOARD_MAX_PENDING_LOGINS`` of them answers new WebSocket
handshakes ``503 Service Unavailable`` with a ``Retry-After`` at once (``ws.py``). In a
reconnect storm the logins it takes on then finish within the clients' deadlines, and the
clients it refuses back off (the client libraries' jittered backoff) instead of queueing for a
login that would come after they gave up on it, whose work would be lost.
"""

import asyncio

from gateway import observability


class PendingLogins:
    """Counts the registrations (``Connection.registration``) not yet done."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    @property
    def is_full(self) -> bool:
        return self.count >= self.limit

    def track(self, registration: "asyncio.Future[None]") -> None:
        """Count a login until its registration is done: resolved (``ready``, or a close) or
        cancelled (the connection ended first)."""
        self.count += 1
        observability.LOGINS_PENDING.set(self.count)
        registration.add_done_callback(self._finished)

    def _finished(self, _: "asyncio.Future[None]") -> None:
        self.count -= 1
        observability.LOGINS_PENDING.set(self.count)
