"""Consumed messages in batches: the loop that gathers them, the backoff between two attempts at
a batch that failed, and how messages are settled (acknowledged, requeued, rejected).

``BatchLoop`` waits for one message and takes whatever else has already arrived, up to the batch
size, in arrival order. What a batch means, and when it is durable, is the service's: it calls
``ack_batch`` only after the batch's effect is durable (rows committed, publishes confirmed).

A batch that fails as a whole (a dependency away) is tried again in the process after a
``Backoff``, its messages held unacknowledged, rather than requeued: a requeue counts against the
queue's delivery limit (``proto.topology.DELIVERY_LIMIT``), and an outage of a few minutes would
dead-letter messages whose senders were told ``sent``. Only when the service is stopping (or the
failure is a bug) is a failed batch given back to the queue.
"""

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import structlog
from aio_pika.abc import AbstractIncomingMessage

from proto.metrics import CODE_BATCH_FAILED, CODE_ENVELOPE_REJECTED
from runtime.metrics import ERRORS, count_error

log = structlog.get_logger()

BACKOFF_FIRST_S = 0.2
"""The first pause after a failed batch; it doubles up to ``SWITCHBOARD_RETRY_BACKOFF_MAX_S``."""

# Exported from the start, at 0, by every service that runs batches.
for _code in (CODE_ENVELOPE_REJECTED, CODE_BATCH_FAILED):
    ERRORS.labels(_code)

Process = Callable[[list[AbstractIncomingMessage]], Awaitable[None]]


class BatchLoop:
    """Feeds one consumer's messages, in arrival order and in batches, to ``process``."""

    def __init__(self, process: Process, batch_max: int) -> None:
        self._process = process
        self._batch_max = batch_max
        # None marks the end: put there by close(), after the broker consumer was cancelled.
        self._inbox: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue()

    async def accept(self, message: AbstractIncomingMessage) -> None:
        """The consumer callback: queue the message (the broker's prefetch bounds the queue)."""
        self._inbox.put_nowait(message)

    def close(self) -> None:
        """Let ``run`` finish what it has received, then return."""
        self._inbox.put_nowait(None)

    async def run(self) -> None:
        """Hand batches to ``process``, one at a time, until ``close``."""
        is_closing = False
        while not is_closing:
            first = await self._inbox.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self._batch_max and not self._inbox.empty():
                message = self._inbox.get_nowait()
                if message is None:
                    is_closing = True
                    break
                batch.append(message)
            await self._process(batch)


class Backoff:
    """A growing pause between two attempts at a batch, so a dead dependency is not hammered."""

    def __init__(self, max_s: float, stopping: asyncio.Event) -> None:
        self._max_s = max_s
        self._stopping = stopping
        """Set when the service stops: a failed batch is then given back, not retried."""
        self._next_s = min(BACKOFF_FIRST_S, max_s)

    async def wait(self) -> bool:
        """Pause; return False (at once) when the service is stopping: give the batch back."""
        if self._stopping.is_set():
            return False
        try:
            async with asyncio.timeout(self._next_s):
                await self._stopping.wait()
        except TimeoutError:
            pass  # the pause is over
        self._next_s = min(self._next_s * 2, self._max_s)
        return not self._stopping.is_set()

    def reset(self) -> None:
        """After a batch that succeeded: the next failure pauses briefly again."""
        self._next_s = min(BACKOFF_FIRST_S, self._max_s)


def log_batch_failed(
    failure: Exception, expected: tuple[type[Exception], ...], **sizes: int
) -> None:
    """One line and one count for a batch that failed as a whole: a warning for the failure
    of a dependency (``expected``), a traceback only for the unexpected."""
    count_error(CODE_BATCH_FAILED)
    if isinstance(failure, expected):
        log.warning("batch_failed", error=repr(failure), **sizes)
    else:
        log.error("batch_failed", exc_info=failure, **sizes)


async def ack_batch(messages: Sequence[AbstractIncomingMessage]) -> None:
    """Acknowledge a batch with one multiple ack on its last message.

    Only for a consumer that settles its channel's messages in delivery order: every earlier
    message of the channel is settled already, so the ack covers exactly this batch.
    """
    await settle(messages[-1].ack(multiple=True))


async def requeue(messages: Sequence[AbstractIncomingMessage]) -> None:
    """Give messages back to the broker, to be handled again (here or by another consumer)."""
    for message in messages:
        await settle(message.nack(requeue=True))


async def settle(outcome: Awaitable[None]) -> None:
    """Send an ack, nack or reject; when the channel is gone, the broker redelivers.

    Never raises: a batch that cannot be settled must not stop the batches after it (a
    message of a closed channel raises aiormq's ``ChannelInvalidStateError``, a RuntimeError).
    """
    try:
        await outcome
    except Exception as exc:
        log.warning("settle_failed", error=repr(exc))
