"""The backend HTTP API: ``POST /api/<command>`` in, ``api.<command>`` on the broker, its reply out.

Owns the HTTP server (aiohttp) and the API's own AMQP connection, separate from ``bus.py``'s so
that a deployment gives each a RabbitMQ user with its own topic permissions: the WebSocket side
may publish ``gateway.*`` only, this side ``api.*``. What a request deserves is decided in
``commands.py``; this module reads bodies, publishes, and awaits replies. The contract is
``proto/openapi.yaml``.

Replies come back through RabbitMQ's direct reply-to (https://www.rabbitmq.com/docs/direct-reply-to):
the pseudo-queue is consumed (no-ack) on the channel that publishes the commands, before the
first publish, and each reply is matched to its request by ``correlation_id``.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from aio_pika.abc import AbstractIncomingMessage
from aiohttp import hdrs, web

from gateway import observability
from gateway.commands import (
    WWW_AUTHENTICATE,
    HttpAnswer,
    answer_reply,
    check_command,
    is_authorized,
    method_not_allowed,
    not_published,
    timed_out,
    too_large,
    unauthorized,
)
from gateway.settings import Settings
from proto import env
from runtime.bus import connect
from runtime.publish import Publisher

log = structlog.get_logger()

JSON = "application/json"
API_PATH = "/api/{command}"
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
"""RabbitMQ's pseudo-queue for replies without a reply queue."""


class CommandBus:
    """Publishes commands and hands each reply to the request waiting for it."""

    def __init__(
        self, publisher: Publisher, inbound_exchange: str, command_timeout_s: float
    ) -> None:
        self._publisher = publisher
        self._inbound_exchange = inbound_exchange
        self._command_timeout_s = command_timeout_s
        self._waiting: dict[str, asyncio.Future[bytes]] = {}
        """correlation_id -> the request awaiting that reply."""

    async def on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._waiting.pop(message.correlation_id or "", None)
        if future is None or future.done():
            # Its request timed out (504) or the message is no reply of ours.
            log.info("command_reply_dropped")
            return
        future.set_result(message.body)

    async def call(self, command: str, routing_key: str, body: bytes) -> HttpAnswer:
        """Publish a checked command (confirmed, mandatory) and return the answer to its reply."""
        correlation_id = uuid.uuid4().hex
        reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[correlation_id] = reply
        try:
            try:
                await self._publisher.publish(
                    self._inbound_exchange,
                    routing_key,
                    body,
                    correlation_id=correlation_id,
                    reply_to=DIRECT_REPLY_TO,
                )
            except Exception:
                log.warning("command_publish_failed", command=command, exc_info=True)
                return not_published()
            try:
                async with asyncio.timeout(self._command_timeout_s):
                    return answer_reply(await reply)
            except TimeoutError:
                return timed_out(self._command_timeout_s)
        finally:
            self._waiting.pop(correlation_id, None)


class ApiServer:
    """Answers ``/api/<command>``: method, key, size and body are checked before publishing."""

    def __init__(self, settings: Settings, commands: CommandBus) -> None:
        self._api_key = settings.api_key
        self._max_body_bytes = settings.max_frame_bytes
        self._commands = commands

    async def answer(self, request: web.Request) -> web.Response:
        command = request.match_info["command"]
        headers: dict[str, str] = {}
        if request.method != hdrs.METH_POST:
            answer = method_not_allowed(request.method)
            headers[hdrs.ALLOW] = hdrs.METH_POST
        elif not is_authorized(request.headers.get(hdrs.AUTHORIZATION), self._api_key):
            answer = unauthorized()
            headers[hdrs.WWW_AUTHENTICATE] = WWW_AUTHENTICATE
        else:
            answer = await self._run(command, request)
        log.info(
            "command_answered",
            command=command,
            status=int(answer.status),
            code=answer.code or None,
        )
        if answer.code:
            observability.count_error(answer.code)
        return web.Response(
            status=answer.status,
            body=answer.body,
            content_type=JSON,
            headers=headers,
        )

    async def _run(self, command: str, request: web.Request) -> HttpAnswer:
        if (request.content_length or 0) > self._max_body_bytes:
            return too_large(self._max_body_bytes)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            # A chunked body without Content-Length, cut off at client_max_size.
            return too_large(self._max_body_bytes)
        checked = check_command(command, body)
        if isinstance(checked, HttpAnswer):
            return checked
        return await self._commands.call(
            checked.command, checked.routing_key, checked.body
        )


@asynccontextmanager
async def serve_api(settings: Settings) -> AsyncIterator[int]:
    """Connect to the broker, listen for HTTP requests, and yield the bound port.

    On exit the server stops accepting, lets requests in flight finish (each waits at most
    ``command_timeout_s``) within ``shutdown_timeout_s``, then the connection closes.

    Raises:
        DependencyUnavailable: RabbitMQ cannot be reached at ``api_amqp_url``.
    """
    assert settings.http_port is not None
    async with connect(
        settings.api_amqp_url,
        settings.connect_timeout_s,
        settings.publish_timeout_s,
        name="RabbitMQ (HTTP API)",
        hint=f"check {env.API_AMQP_URL} and that user's permissions",
    ) as connection:
        publisher = await Publisher.open(connection, settings.publish_timeout_s)
        # open_bus declared the topology; this user needs no configure permission.
        commands = CommandBus(
            publisher, settings.names.inbound_exchange, settings.command_timeout_s
        )
        # Declared through the robust channel, so that the consumer is restored with it.
        replies = await publisher.channel.declare_queue(DIRECT_REPLY_TO, passive=True)
        await replies.consume(commands.on_reply, no_ack=True)

        app = web.Application(client_max_size=settings.max_frame_bytes)
        app.router.add_route("*", API_PATH, ApiServer(settings, commands).answer)
        # No access log: one command_answered line per request instead.
        runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=settings.shutdown_timeout_s
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, settings.http_host, settings.http_port)
            await site.start()
            yield runner.addresses[0][1]
        finally:
            await runner.cleanup()
