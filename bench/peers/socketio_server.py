"""A python-socketio chat server: ``AsyncServer`` on aiohttp, scaled out by ``AsyncAioPikaManager``.

``python -m bench.peers.socketio_server --port P --amqp-url URL --channel NAME`` prints
``ready`` once it listens and its manager consumes from RabbitMQ, and stops on SIGTERM or
SIGINT. Start several with the same channel: an emit on one reaches the clients of all.

A client connects to ``/socket.io/?EIO=4&transport=websocket`` with the auth ``{"uid": UID}``
and is put in the room named after its uid. Events::

    send       {"to": UID, "body": ANY}      -> "message" {"from": UID, "body": ANY} to room UID
    join       {"room": ROOM}                -> enters the room; the event's ack gets true
    room_send  {"room": ROOM, "body": ANY}   -> "message" {"from", "room", "body"} to the room

The manager is the library's, with three changes (``TunedAioPikaManager``):

- its consumer takes ``--prefetch`` messages at a time (the library's ``prefetch_count=1``
  waits a round trip to the broker per message);
- its publishing channel is opened at startup. The library opens it at the first emit, and
  sets the connection before the exchange: emits that race the first one find no exchange,
  fail twice (``'NoneType' object has no attribute 'publish'``) and are dropped;
- each server's queue is named ``<channel>.<host_id>`` and exclusive, so that RabbitMQ deletes
  it when the server stops (the library's server-named queue outlives its process by five
  minutes).

Publishing is otherwise the library's: one persistent message per emit on the fanout exchange
named after the channel, with publisher confirms.
"""

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import socketio  # type: ignore[import-untyped]  # python-socketio ships no type hints
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractQueue,
    AbstractRobustConnection,
)
from aiohttp import web

DEFAULT_PREFETCH = 100
STARTUP_TIMEOUT_S = 20.0


class TunedAioPikaManager(socketio.AsyncAioPikaManager):  # type: ignore[misc]
    """``AsyncAioPikaManager`` with a consumer prefetch, its publisher opened at startup, and
    a queue that goes with its server."""

    # Set by the library's constructor, and by open_publisher.
    publisher_connection: AbstractRobustConnection | None
    publisher_channel: AbstractChannel | None
    publisher_exchange: AbstractExchange | None

    def __init__(self, url: str, channel: str, prefetch: int) -> None:
        super().__init__(url, channel=channel)
        self.prefetch = prefetch
        self.listening = asyncio.Event()
        """Set once this server's queue is bound: emits from then on reach its clients."""

    async def open_publisher(self) -> None:
        """Open the publishing channel and exchange, which the library opens at the first emit."""
        async with self._lock:
            if self.publisher_connection is None:
                connection = await self._connection()
                channel = await self._channel(connection)
                self.publisher_exchange = await self._exchange(channel)
                self.publisher_channel = channel
                # Last: the library takes a set connection for a ready exchange.
                self.publisher_connection = connection

    async def _queue(
        self, channel: AbstractChannel, exchange: AbstractExchange
    ) -> AbstractQueue:
        queue = await channel.declare_queue(
            f"{self.channel}.{self.host_id}", exclusive=True
        )
        await queue.bind(exchange)
        self.listening.set()
        return queue

    async def _listen(self) -> AsyncIterator[bytes]:
        # The library's loop, with the prefetch; it reconnects as the library does.
        retry_sleep = 1
        while True:
            try:
                async with await self._connection() as connection:
                    channel = await self._channel(connection)
                    await channel.set_qos(prefetch_count=self.prefetch)
                    exchange = await self._exchange(channel)
                    queue = await self._queue(channel, exchange)
                    async with queue.iterator() as messages:
                        async for message in messages:
                            async with message.process():
                                yield message.body
                                retry_sleep = 1
            except aio_pika.exceptions.ChannelInvalidStateError:
                raise asyncio.CancelledError() from None
            except Exception as exc:
                self._get_logger().error("cannot receive from RabbitMQ: %r", exc)
                await asyncio.sleep(retry_sleep)
                retry_sleep = min(retry_sleep * 2, 60)


def build_server(manager: TunedAioPikaManager) -> socketio.AsyncServer:
    sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=manager)
    uids: dict[str, str] = {}

    @sio.event  # type: ignore[untyped-decorator]
    async def connect(sid: str, environ: dict[str, Any], auth: Any) -> bool:
        uid = auth.get("uid") if isinstance(auth, dict) else None
        if not isinstance(uid, str) or not uid:
            return False
        uids[sid] = uid
        await sio.enter_room(sid, uid)
        return True

    @sio.event  # type: ignore[untyped-decorator]
    async def disconnect(sid: str, reason: str) -> None:
        uids.pop(sid, None)

    @sio.event  # type: ignore[untyped-decorator]
    async def send(sid: str, frame: dict[str, Any]) -> None:
        message = {"from": uids[sid], "body": frame["body"]}
        await sio.emit("message", message, room=frame["to"])

    @sio.event  # type: ignore[untyped-decorator]
    async def join(sid: str, frame: dict[str, Any]) -> bool:
        await sio.enter_room(sid, frame["room"])
        return True

    @sio.event  # type: ignore[untyped-decorator]
    async def room_send(sid: str, frame: dict[str, Any]) -> None:
        room = frame["room"]
        message = {"from": uids[sid], "room": room, "body": frame["body"]}
        await sio.emit("message", message, room=room)

    return sio


async def main(port: int, amqp_url: str, channel: str, prefetch: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    manager = TunedAioPikaManager(amqp_url, channel, prefetch)
    sio = build_server(manager)
    app = web.Application()
    sio.attach(app)
    # The server starts its manager at the first connection; started here, the queue is
    # bound before any client can send.
    sio.manager_initialized = True
    manager.initialize()
    async with asyncio.timeout(STARTUP_TIMEOUT_S):
        await manager.open_publisher()
        await manager.listening.wait()
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print("ready", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
        if manager.publisher_connection is not None:
            await manager.publisher_connection.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.peers.socketio_server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--channel", required=True)
    parser.add_argument(
        "--prefetch",
        type=int,
        default=DEFAULT_PREFETCH,
        help="messages the manager's consumer takes at a time (the library uses 1)",
    )
    args = parser.parse_args()
    asyncio.run(main(args.port, args.amqp_url, args.channel, args.prefetch))
