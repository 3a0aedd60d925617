"""Publishing envelopes coalesced into ``Batch`` envelopes: a future per envelope, a task per
``Batch`` in flight.

What goes in a ``Batch``, and when it leaves, is decided in ``coalescing.py``; the broker is
reached through the publish function ``bus.py`` gives.
"""

import asyncio
from collections.abc import Awaitable, Callable

from gateway.coalescing import BATCH_MAX_BYTES, Coalescing, SealedBatch


class Coalescer:
    """Publishes envelopes in ``Batch`` envelopes (see ``coalescing.py``).

    ``publish`` returns once the broker confirmed the ``Batch`` that carried the envelope, or
    raises what publishing it raised. Envelopes leave in the order they were given.
    """

    def __init__(
        self,
        publish_batch: Callable[[bytes], Awaitable[None]],
        max_bytes: int = BATCH_MAX_BYTES,
    ) -> None:
        self._publish_batch = publish_batch
        self._coalescing: Coalescing[asyncio.Future[None]] = Coalescing(max_bytes)
        self._in_flight: set[asyncio.Task[None]] = set()

    async def publish(self, key: str, body: bytes) -> None:
        await self.submit(key, body)

    def submit(self, key: str, body: bytes) -> asyncio.Future[None]:
        """Queue an envelope now; the future resolves when its batch is confirmed."""
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._start(self._coalescing.submit(key, body, confirmed))
        return confirmed

    def _start(self, batch: SealedBatch[asyncio.Future[None]] | None) -> None:
        if batch is None:
            return
        task = asyncio.create_task(self._send(batch))
        self._in_flight.add(task)
        task.add_done_callback(self._on_sent)

    def _on_sent(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._start(self._coalescing.on_sent())

    async def _send(self, batch: SealedBatch[asyncio.Future[None]]) -> None:
        try:
            await self._publish_batch(batch.body)
        except Exception as exc:
            for confirmed in batch.tickets:
                if not confirmed.done():  # else its caller was cancelled
                    confirmed.set_exception(exc)
        else:
            for confirmed in batch.tickets:
                if not confirmed.done():
                    confirmed.set_result(None)

    async def close(self) -> None:
        """Wait for the batches in flight (each under the publish timeout)."""
        while self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
