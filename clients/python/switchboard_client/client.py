"""The asyncio client: one WebSocket at a time to one of several gateways, kept alive and resumed.

Reconnect delays, close-code rules and the memory of seen mids are decided in ``policy.py``;
this module does the awaiting. The wire protocol is Switchboard's ``proto/frames.py``.
"""

import asyncio
import inspect
import itertools
import json
import logging
import random as random_module
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from switchboard_client.history import (
    Conversation,
    Cursor,
    HistoryPage,
    Receipt,
    ReceiptStream,
    SeqStoreOption,
    conversation_list,
    conversations_frame,
    history_frame,
    history_page,
    seq_store_of,
)
from switchboard_client.policy import (
    SeenMids,
    is_terminal,
    open_deadline_s,
    reconnect_delay_s,
    refresh_delay_s,
    refresh_retry_delay_s,
    token_expiry_s,
    url_order,
)

log = logging.getLogger("switchboard_client")

TokenSource = str | Callable[[], str | Awaitable[str]]
MAX_PRESENCE_UIDS = 100
"""The most uids one ``presence`` frame may ask about; ``presence()`` asks in pieces."""
"""A token, or a function returning one: it is called before every connection."""


class State(StrEnum):
    CONNECTING = "connecting"
    """First connection attempt, nothing has been ready yet."""
    READY = "ready"
    """``ready`` received: sends go out, messages come in."""
    RECONNECTING = "reconnecting"
    """The connection dropped; pending requests wait and are sent again after the next ready."""
    CLOSED = "closed"
    """Closed by the application, or by a terminal close code; nothing reconnects."""


class SwitchboardClientError(Exception):
    """Base of the client's errors."""


class RequestFailed(SwitchboardClientError):
    """The gateway answered a request with an ``error`` frame."""

    def __init__(self, code: str, message: str, client_id: str | None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.client_id = client_id


class ClientClosed(SwitchboardClientError):
    """The client stopped: closed by the application (1000) or by a terminal close code."""

    def __init__(self, close_code: int, reason: str = "") -> None:
        super().__init__(f"closed with {close_code} {reason}".rstrip())
        self.close_code = close_code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Message:
    """One received ``message`` frame; exactly one of to, group, room, broadcast is set."""

    mid: str
    sender: str
    body: Any
    ts: int
    to: str | None = None
    group: str | None = None
    room: str | None = None
    """The room of a join request."""
    broadcast: bool = False
    transient: bool = False
    """Sent with ``transient=True``: only to connections online then, never stored."""
    seq: int | None = None
    """Its place in the uid's inbox, with history on (none for room, broadcast, transient)."""

    @classmethod
    def from_frame(cls, frame: dict[str, Any]) -> "Message":
        return cls(
            mid=frame["mid"],
            sender=frame["from"],
            body=frame.get("body"),
            ts=frame.get("ts", 0),
            to=frame.get("to"),
            group=frame.get("group"),
            room=frame.get("room"),
            broadcast=bool(frame.get("broadcast", False)),
            transient=frame.get("transient") is True,
            seq=frame.get("seq") if isinstance(frame.get("seq"), int) else None,
        )

    @property
    def needs_ack(self) -> bool:
        """Room, broadcast and transient messages are never kept, so they take no ack."""
        return self.room is None and not self.broadcast and not self.transient


@dataclass(slots=True)
class _Request:
    """A frame with an ``id`` that waits for its reply, across reconnects."""

    frame_text: str
    future: asyncio.Future[Any] | None
    """None for requests the client makes itself (joining its rooms again)."""
    room: str | None = None
    """The room of a join request."""


@dataclass(slots=True)
class _Counters:
    reconnects: int = 0
    duplicates_dropped: int = 0
    resent_requests: int = 0
    refreshes: int = 0
    """Tokens replaced on an open connection (``refresh`` answered ``refreshed``)."""
    gateways: list[str] = field(default_factory=list)
    """The URL of every connection that reached ready, in order."""


class Client:
    """A Switchboard client: ``async with Client(urls, token) as client: ...``.

    Args:
        urls: gateway URLs (``ws://host:port/ws``); each reconnect goes to the next one, in
            an order of the client's own (``shuffle_urls``).
        token: a JWT, or a function (sync or async) returning one; called before each
            connection, and before the connection's token expires (``refresh_before_s``): the
            new token replaces it on the open connection (a ``refresh`` frame), which the
            gateway would otherwise close at ``exp`` (4004).
        ping_interval_s: an application ``ping`` goes out this long after the last pong.
        pong_timeout_s: a connection without ``pong`` this long after a ping is dead.
        reply_timeout_s: a request (send, join, leave, presence) unanswered this long is sent
            again with the same id, which the server carries out once.
        open_timeout_s: deadline of the first connection attempt for its handshake, and as
            much again for ``ready``; each attempt after one that failed gets twice the one
            before (``policy.open_deadline_s``), up to ``open_timeout_max_s``.
        open_timeout_max_s: cap of every attempt's deadline.
        refresh_before_s: how long before the token's ``exp`` a new one is asked for (half
            the token's remaining life when that is shorter); only with a token function.
        backoff_base_s: ceiling of the first jittered reconnect delay; doubles per attempt.
        backoff_max_s: cap of every reconnect delay.
        seen_mids: how many recent mids are remembered to drop duplicates.
        on_state: called with each new State.
        random: a draw in ``[0, 1)``, for the jitter.
        seq_store: where the highest ``seq`` processed is kept (a message's once it is
            acknowledged, a receipt's once delivered): a file path, a ``(load, save)`` pair of
            functions, a ``SeqStore``, or None for memory. Every ``init`` carries it as
            ``since`` once there is one, so that the gateway pushes what came after it.
        on_receipt: called with each ``Receipt`` (see also ``receipts()``).
        on_synced: called with the inbox's head at ``synced``: everything before it was pushed.
        shuffle_urls: try the URLs in an order drawn at random once (``policy.url_order``),
            so that the clients of a gateway that goes away spread over the others rather
            than all moving to the next one in the list; False: in the order given.
    """

    def __init__(
        self,
        urls: Sequence[str] | str,
        token: TokenSource,
        *,
        ping_interval_s: float = 10.0,
        pong_timeout_s: float = 5.0,
        reply_timeout_s: float = 10.0,
        open_timeout_s: float = 5.0,
        open_timeout_max_s: float = 20.0,
        refresh_before_s: float = 30.0,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        seen_mids: int = 10_000,
        on_state: Callable[[State], None] | None = None,
        random: Callable[[], float] = random_module.random,
        seq_store: SeqStoreOption = None,
        on_receipt: Callable[[Receipt], None] | None = None,
        on_synced: Callable[[int], None] | None = None,
        shuffle_urls: bool = True,
    ) -> None:
        given = [urls] if isinstance(urls, str) else list(urls)
        if not given:
            raise ValueError("at least one gateway URL is needed")
        self.urls = url_order(given, random) if shuffle_urls else given
        """The URLs in the order they are tried."""
        self._token = token
        self.ping_interval_s = ping_interval_s
        self.pong_timeout_s = pong_timeout_s
        self.reply_timeout_s = reply_timeout_s
        self.open_timeout_s = open_timeout_s
        self.open_timeout_max_s = open_timeout_max_s
        self.refresh_before_s = refresh_before_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._on_state = on_state
        self._random = random
        self._seen = SeenMids(seen_mids)
        self._ids = itertools.count(1)
        self._id_prefix = uuid.uuid4().hex[:12]
        """Client ids must stay unique across processes: the router dedups on (uid, id)."""
        self._pending: dict[str, _Request] = {}
        self._rooms: set[str] = set()
        self._unsent_acks: list[str] = []
        self._inbox: asyncio.Queue[Message | None] = asyncio.Queue()
        self._ws: ClientConnection | None = None
        """The current connection, once it is ready; None between connections."""
        self._became_ready = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._closed: ClientClosed | None = None
        self._unacked_by_streams: dict[int, Message] = {}
        self.cursor = Cursor(seq_store_of(seq_store))
        self._on_receipt = on_receipt
        self._on_synced = on_synced
        self._receipts: asyncio.Queue[Receipt | None] | None = None
        self.state = State.CONNECTING
        self.uid: str | None = None
        self.gateway_url: str | None = None
        self.counters = _Counters()

    # Lifecycle

    async def __aenter__(self) -> "Client":
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        unacked = list(self._unacked_by_streams.values())
        if exc_type is None:
            # The loop body that got the last message finished without raising: it was handled.
            for message in unacked:
                await self.ack(message)
            await self._flush_acks_before_close()
        await self.close()

    async def start(self, ready_timeout_s: float = 30.0) -> None:
        """Start connecting; return at the first ``ready``.

        Raises:
            ClientClosed: the gateway refused the token (4003) or kicked the uid (4005).
            TimeoutError: no gateway was ready within ``ready_timeout_s``.
        """
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="switchboard-client")
        try:
            async with asyncio.timeout(ready_timeout_s):
                await self.wait_ready()
        except BaseException:
            await self.close()
            raise

    async def wait_ready(self) -> None:
        """Wait until a connection is ready; raises ClientClosed if the client stopped."""
        while True:
            if self._closed is not None:
                raise self._closed
            if self._ws is not None:
                return
            self._became_ready.clear()
            await self._became_ready.wait()

    async def close(self) -> None:
        """Stop: close the connection, fail pending requests with ClientClosed(1000)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            await asyncio.wait([runner])  # raises nothing but our own cancellation
        self._stop(ClientClosed(1000, "closed by the application"))

    # Requests

    async def send(
        self,
        *,
        body: Any,
        to: str | None = None,
        group: str | None = None,
        room: str | None = None,
        broadcast: bool = False,
        client_id: str | None = None,
        transient: bool = False,
    ) -> str:
        """Send ``body`` to one uid, group or room, or to everyone; return its mid.

        The frame is sent again, with the same id, after every reconnect until a ``sent``
        receipt arrives; the server delivers it once. A ``transient`` message (a typing
        indicator, a game move) reaches only the connections online now and is never stored.

        Raises:
            RequestFailed: the gateway rejected it (``code`` is the error code).
            ClientClosed: the client stopped before the receipt came.
        """
        targets = [to is not None, group is not None, room is not None, broadcast]
        if sum(targets) != 1:
            raise ValueError("give exactly one of to, group, room, broadcast=True")
        client_id = client_id or self._next_id("c")
        frame: dict[str, Any] = {"type": "send", "id": client_id}
        if to is not None:
            frame["to"] = to
        elif group is not None:
            frame["group"] = group
        elif room is not None:
            frame["room"] = room
        else:
            frame["broadcast"] = True
        frame["body"] = body
        if transient:
            frame["transient"] = True
        mid: str = await self._request(client_id, frame)
        return mid

    async def join(self, room: str) -> None:
        """Join a room; the client joins it again after each reconnect until ``leave``."""
        client_id = self._next_id("j")
        await self._request(client_id, {"type": "join", "id": client_id, "room": room})

    async def leave(self, room: str) -> None:
        self._rooms.discard(room)
        client_id = self._next_id("l")
        await self._request(client_id, {"type": "leave", "id": client_id, "room": room})

    async def presence(self, uids: Sequence[str]) -> list[str]:
        """Return which of ``uids`` are online now (asked about ``MAX_PRESENCE_UIDS`` at a
        time, the most one frame takes)."""
        online: list[str] = []
        for start in range(0, max(len(uids), 1), MAX_PRESENCE_UIDS):
            client_id = self._next_id("p")
            piece = list(uids[start : start + MAX_PRESENCE_UIDS])
            online += await self._request(
                client_id, {"type": "presence", "id": client_id, "uids": piece}
            )
        return online

    async def history(
        self,
        *,
        with_: str | None = None,
        group: str | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> HistoryPage:
        """A page of the conversation with a uid (``with_``) or a ``group``, oldest first:
        the newest ``limit`` messages, or those below ``seq`` ``before``.

        Raises:
            RequestFailed: ``history_off`` when the server keeps no history.
        """
        client_id = self._next_id("h")
        frame = history_frame(client_id, with_, group, before, limit)
        return history_page(await self._request(client_id, frame), Message.from_frame)

    async def conversations(
        self, *, before: int | None = None, limit: int = 50
    ) -> list[Conversation]:
        """The uid's conversations, the most recently active first, with unread counts; the
        next page: ``before=items[-1].last.seq``."""
        client_id = self._next_id("v")
        frame = conversations_frame(client_id, before, limit)
        return conversation_list(
            await self._request(client_id, frame), Message.from_frame
        )

    async def read(self, mid: str | Message) -> None:
        """Mark the conversation of ``mid`` read up to it: the peer (or a group message's
        sender) and the uid's other connections get a receipt.

        Raises:
            RequestFailed: ``not_found`` (no such mid in the uid's inbox), ``history_off``.
        """
        mid = mid if isinstance(mid, str) else mid.mid
        client_id = self._next_id("m")
        await self._request(client_id, {"type": "read", "id": client_id, "mid": mid})

    def receipts(self) -> "ReceiptStream":
        """``async for receipt in client.receipts()``: receipts from now on, in arrival order."""
        if self._receipts is None:
            self._receipts = asyncio.Queue()
        return ReceiptStream(self._receipts)

    @property
    def seq(self) -> int | None:
        """The highest ``seq`` processed: the next ``init``'s ``since``."""
        return self.cursor.seq

    # Messages

    def messages(self) -> "MessageStream":
        """``async for message in client.messages()``: each one is acknowledged when the loop
        asks for the next one (its handling finished), or when the ``async with`` exits cleanly.

        Ends when the application closes the client; raises ClientClosed after a terminal close.
        """
        return MessageStream(self)

    async def ack(self, message: Message | str) -> None:
        """Acknowledge a message (done for you by ``messages()``)."""
        mid = message if isinstance(message, str) else message.mid
        if isinstance(message, Message):
            self.cursor.processed(message.seq)
        if isinstance(message, Message) and not message.needs_ack:
            self._seen.mark_handled(mid)
            return
        self._seen.mark_handled(mid)
        await self._send_acks([mid])

    # Internals: requests

    def _next_id(self, kind: str) -> str:
        return f"{kind}{self._id_prefix}.{next(self._ids)}"

    async def _request(self, client_id: str, frame: dict[str, Any]) -> Any:
        if self._closed is not None:
            raise self._closed
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        text = json.dumps(frame, separators=(",", ":"))
        joining = frame["room"] if frame["type"] == "join" else None
        request = _Request(text, future, room=joining)
        self._pending[client_id] = request
        ws = self._ws
        if ws is not None:
            await self._send_text(ws, text)
        # Otherwise it goes out after the next ready.
        try:
            while True:
                try:
                    async with asyncio.timeout(self.reply_timeout_s):
                        return await asyncio.shield(future)
                except TimeoutError:
                    # No answer in time: the frame or its answer may have been lost (a broker
                    # restart, for one). The same id makes sending it again safe: the server
                    # carries it out once and answers again.
                    ws = self._ws
                    if ws is not None and self._pending.get(client_id) is request:
                        await self._send_text(ws, text)
        finally:
            # Answered, or the caller gave up (cancelled): nobody waits for this id any more,
            # so it is not sent again after a reconnect, and no close fails it unseen.
            if self._pending.get(client_id) is request:
                del self._pending[client_id]
            if future.done() and not future.cancelled():
                future.exception()  # seen: a failure that came as the caller gave up
            future.cancel()

    async def _send_text(self, ws: ClientConnection, text: str) -> bool:
        try:
            await ws.send(text)
        except ConnectionClosed:
            return False  # the reader sees the close and the connection is replaced
        return True

    async def _send_acks(self, mids: list[str]) -> None:
        ws = self._ws
        if ws is None or not await self._send_text(
            ws, json.dumps({"type": "ack", "mids": mids})
        ):
            self._unsent_acks.extend(mids)

    async def _flush_acks_before_close(self) -> None:
        if self._unsent_acks and self._ws is not None:
            mids, self._unsent_acks = self._unsent_acks, []
            await self._send_acks(mids)

    def _on_reply(self, frame: dict[str, Any]) -> None:
        client_id = frame.get("id")
        request = self._pending.get(client_id) if isinstance(client_id, str) else None
        if request is None:
            return  # a late second receipt for a request sent twice
        del self._pending[client_id]  # type: ignore[arg-type]  # str, checked above
        kind = frame.get("type")
        if kind == "joined":
            self._rooms.add(frame["room"])
        elif kind == "left":
            self._rooms.discard(frame["room"])
        future = request.future
        if future is None or future.done():
            if kind == "error":
                log.warning(
                    "rejoin failed: %s room=%s", frame.get("code"), request.room
                )
            return
        if kind == "error":
            future.set_exception(
                RequestFailed(
                    str(frame.get("code")), str(frame.get("message", "")), client_id
                )
            )
        elif kind == "sent":
            future.set_result(frame["mid"])
        elif kind == "presence":
            future.set_result(list(frame.get("online", [])))
        elif kind in ("history", "conversations", "marked"):
            future.set_result(frame)
        else:
            future.set_result(frame.get("room"))

    # Internals: connections

    def _set_state(self, state: State) -> None:
        if state is self.state:
            return
        self.state = state
        if self._on_state is not None:
            self._on_state(state)

    def _stop(self, closed: ClientClosed) -> None:
        if self._closed is not None:
            return
        self._closed = closed
        self._ws = None
        for request in self._pending.values():
            if request.future is not None and not request.future.done():
                request.future.set_exception(closed)
        self._pending.clear()
        self._inbox.put_nowait(None)
        if self._receipts is not None:
            self._receipts.put_nowait(None)
        self._became_ready.set()
        self._set_state(State.CLOSED)

    async def _token_now(self) -> str:
        if isinstance(self._token, str):
            return self._token
        token = self._token()
        if inspect.isawaitable(token):
            token = await token
        return token

    async def _run(self) -> None:
        try:
            await self._reconnect_forever()
        except Exception:
            log.exception("client stopped by an unexpected error")
            self._stop(ClientClosed(1011, "client error"))

    async def _reconnect_forever(self) -> None:
        attempt = 0
        failed = (
            0  # connections that ended without ``ready`` since the last that reached it
        )
        index = 0
        while True:
            url = self.urls[index % len(self.urls)]
            index += 1
            close_code: int | None = None
            reason = ""
            was_ready = False
            deadline_s = open_deadline_s(
                failed, self.open_timeout_s, self.open_timeout_max_s
            )
            try:
                close_code, reason, was_ready = await self._connection(url, deadline_s)
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
                log.info("connection failed: url=%s error=%r", url, exc)
            if was_ready:
                attempt = failed = 0
            else:
                failed += 1
            if is_terminal(close_code):
                log.warning("connection refused for good: code=%s", close_code)
                assert close_code is not None
                self._stop(ClientClosed(close_code, reason))
                return
            self._set_state(
                State.RECONNECTING
                if self.counters.gateways or was_ready
                else State.CONNECTING
            )
            delay_s = reconnect_delay_s(
                attempt,
                close_code,
                self.backoff_base_s,
                self.backoff_max_s,
                self._random,
            )
            attempt += 1
            self.counters.reconnects += 1
            log.info("reconnect scheduled: delay_s=%.3f code=%s", delay_s, close_code)
            await asyncio.sleep(delay_s)

    async def _connection(
        self, url: str, deadline_s: float
    ) -> tuple[int | None, str, bool]:
        """One connection from open to close, given ``deadline_s`` for its handshake and as
        much for ``ready``; returns (close code, reason, reached ready)."""
        token = await self._token_now()
        ws = await connect(
            url,
            open_timeout=deadline_s,
            ping_interval=None,  # application pings below: they also work in browsers
            close_timeout=2,
            compression=None,
        )
        ready = asyncio.Event()
        pong = asyncio.Event()
        kicked_reason = ""
        try:
            init: dict[str, Any] = {"type": "init", "token": token}
            if self.cursor.seq is not None:
                init["since"] = self.cursor.seq
            await ws.send(json.dumps(init))
            async with asyncio.TaskGroup() as tasks:
                keepalive = tasks.create_task(
                    self._keep_alive(ws, url, deadline_s, ready, pong)
                )
                refresher = tasks.create_task(self._keep_token_fresh(ws, token, ready))
                try:
                    async for text in ws:
                        try:
                            frame = json.loads(text)
                            kind = frame.get("type")
                        except (ValueError, AttributeError):
                            log.warning("gateway sent a frame that is not an object")
                            continue
                        if kind == "ready":
                            self.uid = frame.get("uid")
                            ready.set()
                            await self._on_ready(ws, url)
                        elif kind == "message":
                            await self._on_message(frame)
                        elif kind == "receipt":
                            self._on_receipt_frame(frame)
                        elif kind == "synced":
                            self._on_synced_frame(frame)
                        elif kind == "pong":
                            pong.set()
                        elif kind == "kicked":
                            kicked_reason = str(frame.get("reason", ""))
                        elif kind == "error" and frame.get("id") is None:
                            log.warning("gateway error: code=%s", frame.get("code"))
                        elif kind in (
                            "sent",
                            "error",
                            "joined",
                            "left",
                            "presence",
                            "refreshed",
                            "history",
                            "conversations",
                            "marked",
                        ):
                            self._on_reply(frame)
                except ConnectionClosed:
                    pass
                finally:
                    keepalive.cancel()
                    refresher.cancel()
        finally:
            self._ws = None
            self.gateway_url = None
            await ws.close()
        code = ws.close_code
        reason = kicked_reason or (ws.close_reason or "")
        return (None if code == 1006 else code), reason, ready.is_set()

    async def _keep_alive(
        self,
        ws: ClientConnection,
        url: str,
        deadline_s: float,
        ready: asyncio.Event,
        pong: asyncio.Event,
    ) -> None:
        """Abort a connection that is not ready within ``deadline_s`` or stops answering
        pings."""
        try:
            async with asyncio.timeout(deadline_s):
                await ready.wait()
            while True:
                await asyncio.sleep(self.ping_interval_s)
                pong.clear()
                async with asyncio.timeout(self.pong_timeout_s):
                    await ws.send(
                        json.dumps({"type": "ping", "id": self._next_id("k")})
                    )
                    await pong.wait()
        except TimeoutError:
            log.warning("connection dead: no ready or pong in time: url=%s", url)
            ws.transport.abort()  # close() would wait for a peer that does not answer
        except ConnectionClosed:
            pass

    async def _keep_token_fresh(
        self, ws: ClientConnection, token: str, ready: asyncio.Event
    ) -> None:
        """Replace the connection's token before it expires, with one from the token function."""
        if isinstance(self._token, str):
            return  # nothing to ask a new token from: the connection ends at exp (4004)
        expires_s = token_expiry_s(token)
        await ready.wait()
        delay_s = (
            None
            if expires_s is None
            else refresh_delay_s(expires_s, time.time(), self.refresh_before_s)
        )
        while expires_s is not None and delay_s is not None:
            await asyncio.sleep(delay_s)
            try:
                fresh = await self._token_now()
                await self._refresh(ws, fresh)
            except (
                Exception
            ) as exc:  # the token function's failure, or the gateway's refusal
                log.warning("token refresh failed: %r", exc)
                delay_s = refresh_retry_delay_s(expires_s, time.time())
                continue
            self.counters.refreshes += 1
            expires_s = token_expiry_s(fresh)
            if expires_s is not None:
                delay_s = refresh_delay_s(expires_s, time.time(), self.refresh_before_s)

    async def _refresh(self, ws: ClientConnection, token: str) -> None:
        """Send ``refresh`` on this connection and wait for ``refreshed``.

        Raises:
            RequestFailed: the gateway refused the token; the connection keeps the old one.
            TimeoutError: no answer within ``reply_timeout_s``.
        """
        client_id = self._next_id("r")
        text = json.dumps({"type": "refresh", "id": client_id, "token": token})
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        # Not resent after a reconnect, unlike other requests: a new connection sends init
        # with a new token, and this task ends with its connection.
        self._pending[client_id] = _Request(text, future)
        try:
            await self._send_text(ws, text)
            async with asyncio.timeout(self.reply_timeout_s):
                await asyncio.shield(future)
        finally:
            self._pending.pop(client_id, None)
            if future.done() and not future.cancelled():
                future.exception()  # seen: a failure that came as the wait ended
            future.cancel()

    async def _on_ready(self, ws: ClientConnection, url: str) -> None:
        # Requests made from now on go out themselves; the snapshot below is everything before.
        self._ws = ws
        self.gateway_url = url
        self.counters.gateways.append(url)
        waiting = list(self._pending.values())
        rooms = self._rooms - {r.room for r in waiting if r.room is not None}
        self._set_state(State.READY)
        self._became_ready.set()
        for room in sorted(rooms):
            client_id = self._next_id("j")
            text = json.dumps({"type": "join", "id": client_id, "room": room})
            self._pending[client_id] = _Request(text, None, room=room)
            await self._send_text(ws, text)
        for request in waiting:
            self.counters.resent_requests += 1
            await self._send_text(ws, request.frame_text)
        if self._unsent_acks:
            mids, self._unsent_acks = self._unsent_acks, []
            await self._send_acks(mids)

    async def _on_message(self, frame: dict[str, Any]) -> None:
        message = Message.from_frame(frame)
        if message.mid in self._seen:
            self.counters.duplicates_dropped += 1
            if self._seen.is_handled(message.mid):
                self.cursor.processed(message.seq)
                if message.needs_ack:
                    await self._send_acks([message.mid])
            # Not handled yet: the application's ack will cover it.
            return
        self._seen.add(message.mid)
        self._inbox.put_nowait(message)

    def _on_receipt_frame(self, frame: dict[str, Any]) -> None:
        by, mid, seq = frame.get("by"), frame.get("mid"), frame.get("seq")
        if not isinstance(by, str) or not isinstance(mid, str):
            return
        receipt = Receipt(by, mid, seq if isinstance(seq, int) else None)
        if self._on_receipt is not None:
            self._on_receipt(receipt)
        if self._receipts is not None:
            self._receipts.put_nowait(receipt)
        self.cursor.processed(receipt.seq)

    def _on_synced_frame(self, frame: dict[str, Any]) -> None:
        head = frame.get("seq")
        if not isinstance(head, int):
            return
        self.cursor.synced(head)
        if self._on_synced is not None:
            self._on_synced(head)

    async def _next_message(self) -> Message | None:
        message = await self._inbox.get()
        if message is None:
            self._inbox.put_nowait(None)  # wake every other reader too
        return message


class MessageStream:
    """Async iterator over received messages; acks each one when the next one is asked for."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._unacked: Message | None = None

    def __aiter__(self) -> "MessageStream":
        return self

    async def __anext__(self) -> Message:
        client = self._client
        if self._unacked is not None:
            handled, self._unacked = self._unacked, None
            client._unacked_by_streams.pop(id(self), None)
            await client.ack(handled)
        message = await client._next_message()
        if message is None:
            closed = client._closed
            if closed is not None and closed.close_code != 1000:
                raise closed
            raise StopAsyncIteration
        self._unacked = message
        client._unacked_by_streams[id(self)] = message
        return message
