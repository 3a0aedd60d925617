"""Confirmed publishes: a message is published once the broker said it holds it.

The publishing channel has publisher confirms, and a mandatory message that no queue takes
raises rather than vanishing (https://www.rabbitmq.com/docs/confirms). Every message is
JSON, persistent unless the caller says its message may be lost with the broker.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TypeVar

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from pamqp.common import FieldTable

from proto.names import HEADER_REJECTED_REASON
from runtime.metrics import PUBLISH_CONFIRM

CONTENT_TYPE = "application/json"
RETRY_S = 1.0
"""How long ``publish_until_confirmed`` waits before publishing again what failed."""

T = TypeVar("T")


class ChannelLost(ConnectionError):
    """The publishing channel closed (its connection was lost) before the broker confirmed."""


class Publisher:
    """Publishes on one channel with confirms, each publish under the publish timeout."""

    def __init__(self, channel: AbstractChannel, timeout_s: float) -> None:
        self.channel = channel
        self._timeout_s = timeout_s

    @classmethod
    async def open(
        cls, connection: AbstractRobustConnection, timeout_s: float
    ) -> "Publisher":
        """Open a channel with publisher confirms, on which a return raises."""
        channel = await connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        return cls(channel, timeout_s)

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        mandatory: bool = True,
        message_id: str = "",
        correlation_id: str = "",
        reply_to: str = "",
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        persistent: bool = True,
    ) -> None:
        """Publish one message and return once the broker confirmed it, within ``timeout_s``
        (by default the publish timeout).

        ``persistent=False`` for what nobody loses by a broker restart (a query's answer, which
        its client asks again): a classic queue keeps it in memory only and confirms it at
        once, where a persistent message is confirmed after its write to disk.

        Through the AMQP channel under aio-pika's, with ``wait=False``: aio-pika's publish
        holds the channel until its frames are written, one message per pass of the writer;
        this lets concurrent publishes share the passes (about a third less CPU per message),
        and each still waits for its own confirm. The wait from the publish to the confirm is
        observed in ``runtime.metrics.PUBLISH_CONFIRM`` (not the wait for a reconnecting
        channel before it).

        Raises:
            Exception: no confirm within the publish timeout (``TimeoutError``, which covers
                the wait for a reconnecting channel too), a nack, a return (``mandatory`` and
                no queue took it), or a closed channel (``ChannelLost`` when it closed
                while the confirm was awaited).
        """
        fields: FieldTable | None = dict(headers.items()) if headers else None
        # Fresh properties per message: aiormq writes a message id into them.
        properties = aiormq.spec.Basic.Properties(
            content_type=CONTENT_TYPE,
            delivery_mode=(
                aio_pika.DeliveryMode.PERSISTENT
                if persistent
                else aio_pika.DeliveryMode.NOT_PERSISTENT
            ).value,
            message_id=message_id or None,
            correlation_id=correlation_id or None,
            reply_to=reply_to or None,
            headers=fields,
        )
        try:
            async with asyncio.timeout(
                self._timeout_s if timeout_s is None else timeout_s
            ):
                channel = await self.channel.get_underlay_channel()
                assert isinstance(
                    channel, aiormq.Channel
                )  # ``wait`` is aiormq.Channel's
                start = time.perf_counter()
                await channel.basic_publish(
                    body,
                    exchange=exchange,
                    routing_key=routing_key,
                    properties=properties,
                    mandatory=mandatory,
                    wait=False,
                )
                PUBLISH_CONFIRM.observe(time.perf_counter() - start)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this task was asked to stop
            # The connection was lost and aiormq cancelled the confirms its channel owed: a
            # failed publish, not a cancelled caller (whose loop would end without a word).
            raise ChannelLost(
                "the channel closed before the broker confirmed"
            ) from None

    async def publish_dead_letter(
        self, dead_letter_exchange: str, routing_key: str, body: bytes, reason: str
    ) -> None:
        """Dead-letter one refused item with why (``HEADER_REJECTED_REASON``), under the
        routing key it came with; returns once the broker confirmed."""
        await self.publish(
            dead_letter_exchange,
            routing_key,
            body,
            headers={HEADER_REJECTED_REASON: reason},
        )


async def confirm_all(publishes: Iterable[Awaitable[None]]) -> None:
    """Await publishes together; return once every one is confirmed.

    Raises:
        Exception: the first failure, once every publish has finished one way or another (none
            is left running behind the caller's back).
    """
    results = await asyncio.gather(*publishes, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def publish_until_confirmed(
    items: Sequence[T],
    publish: Callable[[T], Awaitable[None]],
    on_failed: Callable[[int], None],
    retry_s: float = RETRY_S,
) -> None:
    """Publish every item together; publish the failed ones again until all are confirmed.

    For what nobody would ask for again (a re-announcement, a dead letter whose delivery waits
    for it): only the failed items go again, after ``retry_s``, while the broker is away.
    ``on_failed`` gets the number of items that failed in a round (to log it).
    """
    pending = list(items)
    while pending:
        results = await asyncio.gather(
            *(publish(item) for item in pending), return_exceptions=True
        )
        pending = [
            item
            for item, result in zip(pending, results, strict=True)
            if isinstance(result, Exception)
        ]
        if pending:
            on_failed(len(pending))
            await asyncio.sleep(retry_s)  # back off while the broker is away
