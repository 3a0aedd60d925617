"""One backend command over AMQP: publish ``api.<command>`` to ``<ns>.inbound``, await the reply.

As a backend does it (README, "Backend API"): the reply comes back through RabbitMQ's direct
reply-to, consumed before the publish on the publishing channel, matched by ``correlation_id``;
the publish is confirmed and mandatory, so that a broker that routes it nowhere (no service ever
declared the namespace) is an error rather than a wait.
"""

import asyncio
import uuid

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import ChannelNotFoundEntity, DeliveryError

from proto.names import Names

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
CONTENT_TYPE = "application/json"


class CommandFailed(Exception):
    """The command was not carried out, or its reply did not come in time: the reason."""


async def call(
    amqp_url: str, namespace: str, routing_key: str, body: bytes, timeout_s: float
) -> bytes:
    """Publish the command and return its reply's body.

    Raises:
        CommandFailed: the broker cannot be reached, refused or did not route the command, or
            no reply came within ``timeout_s`` (a command such as ``kick`` may still be carried
            out later).
    """
    names = Names(namespace)
    try:
        async with asyncio.timeout(timeout_s):
            connection = await aio_pika.connect(amqp_url, timeout=timeout_s)
    except Exception as exc:
        raise CommandFailed(
            f"cannot connect to RabbitMQ: {exc or type(exc).__name__}"
        ) from exc
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        correlation_id = uuid.uuid4().hex

        async def on_reply(message: AbstractIncomingMessage) -> None:
            if message.correlation_id == correlation_id and not reply.done():
                reply.set_result(message.body)

        replies = await channel.declare_queue(DIRECT_REPLY_TO, passive=True)
        await replies.consume(on_reply, no_ack=True)
        message = aio_pika.Message(
            body,
            content_type=CONTENT_TYPE,
            correlation_id=correlation_id,
            reply_to=DIRECT_REPLY_TO,
        )
        try:
            exchange = await channel.get_exchange(names.inbound_exchange, ensure=False)
            await exchange.publish(
                message, routing_key, mandatory=True, timeout=timeout_s
            )
        except ChannelNotFoundEntity as exc:
            raise CommandFailed(
                f"no exchange {names.inbound_exchange}: no service ever ran in the "
                f"namespace {namespace}"
            ) from exc
        except DeliveryError as exc:
            raise CommandFailed(
                f"{names.inbound_exchange} routed {routing_key} nowhere: "
                "is a router running in this namespace?"
            ) from exc
        except Exception as exc:
            raise CommandFailed(f"the broker did not take the command: {exc}") from exc
        try:
            async with asyncio.timeout(timeout_s):
                return await reply
        except TimeoutError:
            raise CommandFailed(
                f"no reply within {timeout_s:g} s (the command may still be carried out)"
            ) from None
