"""Publishing envelopes coalesced into ``Batch`` envelopes: a future per envelope, a task per
``Batch`` in flight.

What goes in a ``Batch``, and when it leaves, is decided in ``coalescing.py``; the broker is
reached through the publish function ``bus.py`` gives.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from gateway.coalescing import BATCH_MAX_BYTES, Coalesced, Coalescing
from runtime.metrics import Observer


class _Ticket(NamedTuple):
    confirmed: asyncio.Future[None]
    """Answered once the envelope's ``Batch`` is confirmed (or failed)."""
    queued_at: float
    """``time.monotonic()`` when the envelope joined the waiting ones."""


class Coalescer:
    """Publishes envelopes in ``Batch`` envelopes (see ``coalescing.py``).

    ``publish`` returns once the broker confirmed the ``Batch`` that carried the envelope, or
    raises what publishing it raised. Envelopes leave in the order they were given. With
    ``waits``, each envelope's wait from its ``submit`` to its ``Batch``'s publish is observed
    there (one clock read per envelope, and one per ``Batch``).

    Each envelope is answered within ``timeout_s`` of its ``submit``, however long the
    ``Batch`` before it hung: a ``Batch`` is published with what is left of its oldest
    envelope's time (``publish_batch`` gets it), and one whose oldest envelope has none left
    fails with ``TimeoutError`` unpublished. Without this, while the broker stalls, each
    ``Batch`` that waited behind another would wait a whole timeout more.
    """

    def __init__(
        self,
        publish_batch: Callable[[bytes, float], Awaitable[None]],
        timeout_s: float,
        max_bytes: int = BATCH_MAX_BYTES,
        waits: Observer | None = None,
    ) -> None:
        self._publish_batch = publish_batch
        self._timeout_s = timeout_s
        self._coalescing: Coalescing[_Ticket] = Coalescing(max_bytes)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._waits = waits

    async def publish(self, key: str, body: bytes) -> None:
        await self.submit(key, body)

    def submit(self, key: str, body: bytes) -> asyncio.Future[None]:
        """Queue an envelope now; the future resolves when its ``Batch`` is confirmed."""
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ticket = _Ticket(confirmed, time.monotonic())
        self._start(self._coalescing.submit(key, body, ticket))
        return confirmed

    def _start(self, coalesced: Coalesced[_Ticket] | None) -> None:
        if coalesced is None:
            return
        if self._waits is not None:
            now = time.monotonic()
            for ticket in coalesced.tickets:
                self._waits.observe(now - ticket.queued_at)
        task = asyncio.create_task(self._send(coalesced))
        self._in_flight.add(task)
        task.add_done_callback(self._on_sent)

    def _on_sent(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._start(self._coalescing.on_sent())

    async def _send(self, coalesced: Coalesced[_Ticket]) -> None:
        oldest = coalesced.tickets[0]
        left_s = oldest.queued_at + self._timeout_s - time.monotonic()
        try:
            if left_s <= 0:
                raise TimeoutError("the publish timeout passed behind an earlier Batch")
            await self._publish_batch(coalesced.body, left_s)
        except Exception as exc:
            for confirmed, _ in coalesced.tickets:
                if not confirmed.done():  # else its caller was cancelled
                    confirmed.set_exception(exc)
        else:
            for confirmed, _ in coalesced.tickets:
                if not confirmed.done():
                    confirmed.set_result(None)

    async def close(self) -> None:
        """Wait for the ``Batch`` envelopes in flight (each under the publish timeout)."""
        while self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
