"""A raw WebSocket client for tests: sends frames as they are, and collects every frame it receives.

It speaks the wire protocol directly (no client library), so tests see exactly what a client sees.
"""

import asyncio
import itertools
import json
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.timing import scaled

Frame = dict[str, Any]
_client_ids = itertools.count(1)


class RawClient:
    """One WebSocket connection to a gateway."""

    def __init__(self, websocket: ClientConnection) -> None:
        self.websocket = websocket
        self.received: list[Frame] = []
        self._unread: list[Frame] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())
        self.uid: str | None = None
        self.conn_id: str | None = None

    @classmethod
    async def open(cls, url: str, **kwargs: Any) -> "RawClient":
        # No compression unless a test asks for it (the gateways refuse it by default).
        options: dict[str, Any] = {"compression": None, **kwargs}
        websocket = await connect(url, open_timeout=scaled(5), **options)
        return cls(websocket)

    async def _read(self) -> None:
        try:
            async for text in self.websocket:
                frame = json.loads(text)
                self.received.append(frame)
                self._unread.append(frame)
                self._changed.set()
        except ConnectionClosed:
            pass
        finally:
            self._changed.set()

    async def send_frame(self, frame: Frame) -> None:
        await self.websocket.send(json.dumps(frame))

    async def send_raw(self, payload: str | bytes) -> None:
        await self.websocket.send(payload)

    async def expect(
        self, match: Callable[[Frame], bool] | str, within_s: float = 5.0
    ) -> Frame:
        """Return (and consume) the first unread frame that matches (a type name or a predicate)."""
        predicate = (
            (lambda f: f.get("type") == match) if isinstance(match, str) else match
        )
        async with asyncio.timeout(scaled(within_s)):
            while True:
                for index, frame in enumerate(self._unread):
                    if predicate(frame):
                        del self._unread[index]
                        return frame
                if self._reader.done():
                    raise AssertionError(
                        f"connection closed ({self.close_code}) while waiting; "
                        f"unread: {self._unread}"
                    )
                self._changed.clear()
                await self._changed.wait()

    async def expect_nothing(
        self, match: Callable[[Frame], bool] | str, for_s: float = 0.5
    ) -> None:
        """Assert that no matching frame arrives within ``for_s``."""
        try:
            frame = await self.expect(match, within_s=for_s)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected frame {frame}")

    def unread(self) -> list[Frame]:
        return list(self._unread)

    async def init(self, token: str) -> Frame:
        await self.send_frame({"type": "init", "token": token})
        ready = await self.expect(lambda f: f.get("type") in ("ready", "error"))
        assert ready["type"] == "ready", ready
        self.uid, self.conn_id = ready["uid"], ready["conn"]
        return ready

    async def send_message(
        self, to: str, body: Any, client_id: str | None = None
    ) -> Frame:
        """Send a ``send`` frame and return its ``sent`` receipt."""
        client_id = client_id or f"c{next(_client_ids)}"
        await self.send_frame({"type": "send", "id": client_id, "to": to, "body": body})
        reply = await self.expect(
            lambda f: f.get("id") == client_id and f.get("type") in ("sent", "error")
        )
        assert reply["type"] == "sent", reply
        return reply

    async def expect_message(self, within_s: float = 5.0, **fields: Any) -> Frame:
        return await self.expect(
            lambda f: (
                f.get("type") == "message"
                and all(f.get(k) == v for k, v in fields.items())
            ),
            within_s,
        )

    async def ack(self, *mids: str) -> None:
        await self.send_frame({"type": "ack", "mids": list(mids)})

    async def wait_closed(self, within_s: float = 5.0) -> int | None:
        async with asyncio.timeout(scaled(within_s)):
            await self.websocket.wait_closed()
            await self._reader
        return self.close_code

    @property
    def close_code(self) -> int | None:
        return self.websocket.close_code

    async def close(self) -> None:
        await self.websocket.close()
        await self._reader
