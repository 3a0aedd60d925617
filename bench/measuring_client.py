"""The measuring side's Switchboard connection: sends, receipts, messages, latencies, acks.

A ``Member`` speaks the client frames of ``proto/frames.py`` over one WebSocket, with the
websockets client's defaults, as a real client would. It acknowledges every message as it
arrives (one ``ack`` per message, as ``switchboard_client`` does), counts each mid once (the
delivery is at least once), and records the latency of messages whose body carries their send
time (``{"t": monotonic_ns}``, one clock for every process of the host). With history on, it
may ``init`` with ``since`` (``synced`` is timed) and ask for ``history`` pages.
"""

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.tokens import make_token

OPEN_TIMEOUT_S = 20.0

_client_ids = itertools.count(1)


def body_now(n: int) -> bytes:
    """A message body carrying its sequence number and its send time."""
    return b'{"n":%d,"t":%d}' % (n, time.monotonic_ns())


class Member:
    """One initialized connection of one uid."""

    def __init__(self, uid: str, websocket: ClientConnection) -> None:
        self.uid = uid
        self.websocket = websocket
        self.first_frame_s: float | None = None
        """When the first frame after ``init`` arrived (``ready``), on the monotonic clock."""
        self.receipts = 0
        """``sent`` replies to this member's sends."""
        self.refusals = 0
        """``error`` replies."""
        self.mids: set[str] = set()
        """Distinct mids of the messages received."""
        self.duplicates = 0
        self.latencies_ns: list[int] = []
        self.last_message_s = 0.0
        self.synced_s: float | None = None
        """When ``synced`` arrived, on the monotonic clock."""
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        """Frames awaiting their reply (``history``), by client id."""
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str, uid: str) -> "Member":
        """Connect, without ``init`` yet: ``init`` may be timed on its own."""
        websocket = await connect(url, open_timeout=OPEN_TIMEOUT_S)
        return cls(uid, websocket)

    async def init(self, wait: bool = True, since: int | None = None) -> None:
        """Send ``init`` (with ``since``: sync the inbox after it), start reading; with
        ``wait``, return once ``ready`` arrived."""
        self._reader = asyncio.create_task(self._read())
        frame: dict[str, Any] = {
            "type": "init",
            "token": make_token(self.uid, ttl_s=3600),
        }
        if since is not None:
            frame["since"] = since
        await self._send(frame)
        if wait:
            await self.wait_for(lambda: self.first_frame_s is not None, OPEN_TIMEOUT_S)

    async def send_to_uid(self, to: str, body: bytes) -> None:
        client_id = f"c{next(_client_ids)}"
        await self.websocket.send(
            b'{"type":"send","id":"%b","to":%b,"body":%b}'
            % (client_id.encode(), msgspec.json.encode(to), body),
            text=True,
        )

    async def send_to_group(self, group: str, body: bytes) -> None:
        client_id = f"c{next(_client_ids)}"
        await self.websocket.send(
            b'{"type":"send","id":"%b","group":%b,"body":%b}'
            % (client_id.encode(), msgspec.json.encode(group), body),
            text=True,
        )

    async def history(
        self, peer: str, before: int | None, limit: int, within_s: float
    ) -> dict[str, Any]:
        """Ask for a page of the conversation with ``peer``; return the reply (``history``
        or ``error``)."""
        client_id = f"h{next(_client_ids)}"
        frame: dict[str, Any] = {
            "type": "history",
            "id": client_id,
            "with": peer,
            "limit": limit,
        }
        if before is not None:
            frame["before"] = before
        reply: asyncio.Future[dict[str, Any]] = (
            asyncio.get_running_loop().create_future()
        )
        self._replies[client_id] = reply
        try:
            await self._send(frame)
            async with asyncio.timeout(within_s):
                return await reply
        finally:
            self._replies.pop(client_id, None)

    @property
    def answered(self) -> int:
        """This member's sends that got their reply, ``sent`` or ``error``."""
        return self.receipts + self.refusals

    async def wait_for_answers(self, count: int, within_s: float) -> bool:
        return await self.wait_for(lambda: self.answered >= count, within_s)

    async def wait_for_messages(self, count: int, within_s: float) -> bool:
        """Wait until ``count`` distinct messages arrived; False if ``within_s`` passed first."""
        return await self.wait_for(lambda: len(self.mids) >= count, within_s)

    async def wait_for(self, is_done: Callable[[], bool], within_s: float) -> bool:
        """Wait until ``is_done()`` is true; False if ``within_s`` passed first."""
        try:
            async with asyncio.timeout(within_s):
                while not is_done():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        await self.websocket.close()
        if self._reader is not None:
            await self._reader

    async def abort(self) -> None:
        """Drop the connection without a closing handshake, as a client that vanishes."""
        self.websocket.transport.abort()
        if self._reader is not None:
            await self._reader

    async def _send(self, frame: dict[str, Any]) -> None:
        await self.websocket.send(msgspec.json.encode(frame), text=True)

    async def _read(self) -> None:
        try:
            async for text in self.websocket:
                now_ns = time.monotonic_ns()
                frame = msgspec.json.decode(text)
                if self.first_frame_s is None:
                    self.first_frame_s = now_ns / 1e9
                reply = self._replies.get(frame.get("id") or "")
                if reply is not None and not reply.done():
                    reply.set_result(frame)
                match frame.get("type"):
                    case "message":
                        await self._on_message(frame, now_ns)
                    case "sent":
                        self.receipts += 1
                    case "error":
                        self.refusals += 1
                    case "synced":
                        self.synced_s = now_ns / 1e9
                self._changed.set()
        except ConnectionClosed:
            pass
        finally:
            self._changed.set()

    async def _on_message(self, frame: dict[str, Any], now_ns: int) -> None:
        mid = frame["mid"]
        await self._send({"type": "ack", "mids": [mid]})
        if mid in self.mids:
            self.duplicates += 1
            return
        self.mids.add(mid)
        self.last_message_s = now_ns / 1e9
        body = frame.get("body")
        if isinstance(body, dict) and isinstance(body.get("t"), int):
            self.latencies_ns.append(now_ns - body["t"])
