"""Handover to the offline store: copies this gateway cannot deliver, gathered into ``Delivery``s.

Which copies go, and when, is decided in ``acks.py`` (and ``fanout.py`` for connections that are
not here); this publishes them to ``<ns>.inbound`` with the key ``gateway.handover`` (bound to
the offline stores' queue) and, once the broker confirmed, releases the AMQP deliveries they
held. What the broker does not take is published again after a pause.
"""

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from gateway.acks import Held
from gateway.bus import Bus
from proto import envelopes
from proto.envelopes import Delivery, DeliveryItem
from proto.packing import runs_within
from runtime.shutdown import stop_if_cancelled

log = structlog.get_logger()

RETRY_S = 1.0
"""The pause before publishing again while the broker is away."""
_EMPTY_DELIVERY = envelopes.encode(Delivery(items=[]))


class Handover:
    """The copies waiting for the offline store, and the loop that publishes them."""

    def __init__(
        self,
        bus: Bus,
        max_message_bytes: int,
        release: Callable[[Held], Awaitable[None]],
    ) -> None:
        self._bus = bus
        self._max_message_bytes = max_message_bytes
        self._release = release
        """Called for each delivery a copy held, once the copy is confirmed."""
        self._waiting: list[tuple[DeliveryItem, tuple[Held, ...]]] = []
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def queue(self, item: DeliveryItem, held: tuple[Held, ...]) -> None:
        self._waiting.append((item, held))
        self._idle.clear()
        self._ready.set()

    async def wait_idle(self) -> None:
        """Return once every copy queued for the offline store was confirmed by the broker."""
        await self._idle.wait()

    async def run(self) -> None:
        """Publish handed-over copies to the offline store; release them once confirmed."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            taken, self._waiting = self._waiting, []
            if not taken:
                self._idle.set()
                continue
            # Deliveries within the broker's message size: one, unless what was taken is huge.
            encoded = [envelopes.encode(item) for item, _ in taken]
            runs = runs_within(
                [len(e) for e in encoded], self._max_message_bytes, len(_EMPTY_DELIVERY)
            )
            for number, run in enumerate(runs):
                body = b'{"items":[' + b",".join(encoded[i] for i in run) + b"]}"
                try:
                    await self._bus.publish_handover(body)
                except Exception:
                    stop_if_cancelled()
                    log.warning("handover_failed", items=len(run), exc_info=True)
                    unsent = [
                        entry
                        for r in runs[number:]
                        for entry in taken[r.start : r.stop]
                    ]
                    self._waiting = unsent + self._waiting
                    break
                log.info("handover_published", items=len(run))
                for _, helds in taken[run.start : run.stop]:
                    for held in helds:
                        await self._release(held)
            else:
                if not self._waiting:
                    self._idle.set()
                continue
            await asyncio.sleep(RETRY_S)  # back off while the broker is away
            self._ready.set()
