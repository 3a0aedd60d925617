"""The WebSocket server: the only place that awaits on a client's socket.

Each connection runs a reader (frames in, through ``Session``; its effects carried out by
``perform.py``) and, while frames wait in its outbox, a writer (the outbox to the socket, so that
a slow client never blocks deliveries to the others). An idle connection holds its reader alone:
its memory is what the target of 12 KiB per idle connection is about (``bench/README.md``).
"""

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus

import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Origin

from gateway import observability
from gateway.bus import Bus
from gateway.connection import CloseRequest, Connection, Delivered, Outbox
from gateway.credentials import Verifier
from gateway.effects import Effect, FetchKeys
from gateway.hub import Hub
from gateway.jwks import JwksClient
from gateway.limits import ConnectionLimits, Decision, Verdict, utf8_length
from gateway.perform import Performer
from gateway.session import Session
from gateway.settings import Settings
from proto.codes import CloseCode
from proto.mids import MidFactory

log = structlog.get_logger()

WEBSOCKET_PATH = "/ws"
CLOSE_TIMEOUT_S = 5.0
REMOVE_TIMEOUT_S = 10.0
WRITE_FRAMES = 64
WRITE_BYTES = 256 * 1024
"""A writer hands the socket at most ``WRITE_FRAMES`` frames at once, and stops adding
frames once they pass ``WRITE_BYTES``."""


class TrackedConnection(ServerConnection):
    """A server connection that records when the client last sent anything: data, ping or pong."""

    last_activity: float = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # Futures waiting for the client to read (ServerConnection.drain), appended and
        # removed one by one: a list does what the library's deque does here, and an empty
        # list costs 56 bytes where an empty deque costs 760, on every idle connection.
        self.drain_waiters = []  # type: ignore[assignment]  # deque -> list: see above

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.loop.time()
        super().data_received(data)

    def send_data(self) -> None:
        """Write what the protocol has to send in one write (the library writes each frame
        alone): the frames a writer serialises together (``_send_frames``) cost one system
        call, not one each. An empty chunk asks for the end of the stream, as in the library.
        """
        chunks = self.protocol.data_to_send()
        start = 0
        for index, data in enumerate(chunks):
            if data:
                continue
            if index > start:
                self.transport.write(_joined(chunks[start:index]))
            start = index + 1
            # Half-close the TCP connection when possible (no TLS), else close it.
            if self.transport.can_write_eof():
                # The library ignores what it raises too (uvloop raises RuntimeError).
                with contextlib.suppress(Exception):
                    self.transport.write_eof()
            else:
                self.transport.close()
        if len(chunks) > start:
            self.transport.write(_joined(chunks[start:]))


def _joined(chunks: list[bytes]) -> bytes:
    """One bytes of several (a lone chunk as it is, not copied)."""
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class ClientServer:
    """Accepts connections at ``/ws`` and runs each one."""

    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        hub: Hub,
        mids: MidFactory,
        jwks: JwksClient | None = None,
    ) -> None:
        self._settings = settings
        self._hub = hub
        self._mids = mids
        self._performer = Performer(bus, hub)
        self._jwks = jwks
        self._verifier = Verifier(
            settings.jwt_secret if jwks is None else jwks.keyset, settings.token_rules
        )

    def check_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        """Refuse other paths (404) and origins outside the allowlist (403), before upgrading."""
        allowed = self._settings.allowed_origins
        if allowed is not None and request.headers.get("Origin") not in allowed:
            # websockets' own origins= check would answer 403 too, but logs nothing here.
            log.info("origin_refused", origin=request.headers.get("Origin"))
            return connection.respond(HTTPStatus.FORBIDDEN, "Origin not allowed\n")
        if request.path.split("?", 1)[0] != WEBSOCKET_PATH:
            return connection.respond(
                HTTPStatus.NOT_FOUND, f"WebSocket endpoint is {WEBSOCKET_PATH}\n"
            )
        return None

    async def serve_connection(self, websocket: ServerConnection) -> None:
        # The handshake's headers were checked (check_request) and are not read again: about
        # 2.5 KiB of each idle connection's memory.
        for handshake in (websocket.request, websocket.response):
            if handshake is not None:
                handshake.headers.clear()
        conn_id = secrets.token_hex(8)
        session = Session(
            conn_id,
            self._settings.gateway_id,
            self._verifier,
            self._mids,
            public_room_prefix=self._settings.public_room_prefix,
            max_rooms=self._settings.max_rooms_per_connection,
            is_history_on=self._settings.history,
        )
        connection = Connection(
            session, websocket, Outbox(self._settings.outbox_frames), _write
        )
        self._hub.add(connection)
        structlog.contextvars.bind_contextvars(conn_id=conn_id)
        log.info("connection_opened")
        try:
            async with asyncio.TaskGroup() as tasks:
                connection.start_writing(tasks)
                try:
                    await self._read(connection, tasks)
                finally:
                    # No writer may join the group once it ends (or aborts).
                    connection.stop_writing()
                writer = connection.writer
                if connection.is_closing:
                    await self._finish_writing(connection, writer)
                elif writer is not None:
                    writer.cancel()
        finally:
            # Runs on cancellation too (shutdown): the unacknowledged messages must reach the store.
            async with asyncio.timeout(REMOVE_TIMEOUT_S):
                await asyncio.shield(self._hub.remove(connection))

    async def _read(self, connection: Connection, tasks: asyncio.TaskGroup) -> None:
        websocket = connection.websocket
        assert isinstance(websocket, TrackedConnection)
        init_deadline = websocket.loop.time() + self._settings.init_timeout_s
        limits = ConnectionLimits(
            self._settings.rate_limit_per_s,
            self._settings.rate_limit_burst,
            self._settings.rate_limit_bytes_per_s,
            self._settings.rate_limit_bytes_burst,
        )
        self._watch_deadline(connection, init_deadline)
        try:
            while True:
                try:
                    text = await websocket.recv()
                except ConnectionClosed:
                    return
                if connection.is_timed_out:
                    return  # being closed: nothing more is read
                if not connection.session.is_initialized:
                    # The init deadline is for the init to come: one read in time is not cut
                    # while its keys are fetched or the router's ready awaited.
                    _unwatch_deadline(connection)
                if not await self._on_frame(connection, text, limits, tasks):
                    return
                # An idle reader holds no frame: the last one may be an init with its token.
                del text
                # An init or a refresh may bring the deadline forward.
                self._watch_deadline(connection, init_deadline)
        finally:
            _unwatch_deadline(connection)

    def _watch_deadline(self, connection: Connection, init_deadline: float) -> None:
        """Have the connection closed once its deadline (``_deadline``) passes, unless a timer
        set already fires before it.

        A timer, rather than a timeout around each ``recv``: a timeout adds an object, a
        context and bound methods to the timer, about 0.3 KiB of each idle connection.
        """
        websocket = connection.websocket
        assert isinstance(websocket, TrackedConnection)
        when = self._deadline(websocket, connection.session, init_deadline)
        timer = connection.deadline_timer
        if timer is not None:
            if timer.when() <= when:
                return  # it looks again then, and waits on if the client sent something
            timer.cancel()
        connection.deadline_timer = websocket.loop.call_at(
            when, self._on_deadline, connection, init_deadline
        )

    def _on_deadline(self, connection: Connection, init_deadline: float) -> None:
        """The timer of ``_watch_deadline``: close the connection if its deadline passed."""
        connection.deadline_timer = None
        websocket = connection.websocket
        assert isinstance(websocket, TrackedConnection)
        session = connection.session
        if self._deadline(websocket, session, init_deadline) > websocket.loop.time():
            # The client sent something meanwhile (a ping or a pong too).
            self._watch_deadline(connection, init_deadline)
            return
        if connection.tasks is None:
            return  # the reader is done: the connection is going already
        if session.expires_s <= time.time():
            code = CloseCode.TOKEN_EXPIRED  # no refresh came in time
        elif session.is_initialized:
            code = CloseCode.IDLE_TIMEOUT
        else:
            code = CloseCode.INIT_TIMEOUT
        log.info("connection_timed_out", code=code.name.lower())
        connection.is_timed_out = True
        # At once, ahead of the frames queued (the client may not be reading them); the
        # reader stops at the close, and the writer is cancelled then.
        connection.tasks.create_task(_close(websocket, code, code.name.lower()))

    async def _on_frame(
        self,
        connection: Connection,
        text: str | bytes,
        limits: ConnectionLimits,
        tasks: asyncio.TaskGroup,
    ) -> bool:
        """Carry out one frame from the client; False once the connection is to be closed."""
        session = connection.session
        now_s = connection.websocket.loop.time()
        size = utf8_length(text) if limits.counts_bytes else 0
        decision = limits.on_frame(now_s, size)
        if not decision.is_accepted:
            effects = self._rate_limited(session, text, decision)
        elif isinstance(text, bytes):
            effects = session.on_binary()
        else:
            is_throttled = self._hub.throttles.is_throttled(session.uid)
            effects = session.on_text(text, now_ms(), is_throttled)
            if effects and isinstance(effects[0], FetchKeys):
                # The token names a key not held yet (the provider rotated its keys).
                if self._jwks is not None:
                    await self._jwks.fetch()
                effects = session.on_text(
                    text, now_ms(), is_throttled, may_fetch_keys=False
                )
            # A presence frame costs a frame per ten uids, an ack a tenth: settled once decoded.
            decision = limits.on_cost(now_s, session.last_frame_cost - 1)
            if not decision.is_accepted:
                frame_type = session.last_frame_type
                effects = self._rate_limited(session, text, decision)
                # Decoded: counted as what it is.
                session.last_frame_type = frame_type
        observability.count_frame_received(session.last_frame_type)
        if not await self._performer.perform(connection, effects, tasks):
            return False
        return connection.registration is None or await self._registered(connection)

    def _rate_limited(
        self, session: Session, text: str | bytes, decision: Decision
    ) -> list[Effect]:
        assert decision.limit is not None
        is_flooding = decision.verdict is Verdict.CLOSE
        return session.on_rate_limited(text, is_flooding, decision.limit)

    async def _registered(self, connection: Connection) -> bool:
        """Read nothing more until the router registered the connection (``ready``) or refused
        it (a close: over the uid's connection cap); False when it is to be closed.

        What the client sent meanwhile waits in the socket: a connection the router refuses
        never gets to send anything. Bounded by the idle timeout (the router is away).
        """
        registration = connection.registration
        assert registration is not None
        closed = asyncio.ensure_future(connection.websocket.wait_closed())
        try:
            done, _ = await asyncio.wait(
                (registration, closed),
                timeout=self._settings.idle_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            closed.cancel()
            connection.registration = None
        if connection.is_closing or closed in done:
            return False
        if registration not in done:
            log.warning("registration_timed_out")
            connection.request_close(CloseCode.INTERNAL_ERROR, "not registered in time")
            return False
        return True

    def _deadline(
        self, websocket: TrackedConnection, session: Session, init_deadline: float
    ) -> float:
        """Before init, the init deadline; after, the idle timeout from the client's last bytes,
        or the token's expiry if that comes first."""
        if not session.is_initialized:
            return init_deadline
        idle_deadline = websocket.last_activity + self._settings.idle_timeout_s
        expires_in_s = session.expires_s - time.time()
        return min(idle_deadline, websocket.loop.time() + expires_in_s)

    async def _finish_writing(
        self, connection: Connection, writer: asyncio.Task[None] | None
    ) -> None:
        """Let the writer push what is queued and the close frame, within a deadline.

        Meanwhile incoming frames are read and dropped: websockets stops reading the socket
        while its queue of unread frames is full (a flood fills it), and would then never see
        the client's close frame.
        """
        discarding = asyncio.create_task(_discard_incoming(connection.websocket))
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                if writer is not None:  # None: it wrote the close already
                    await writer
                await discarding
        except TimeoutError:
            connection.websocket.transport.abort()
        finally:
            discarding.cancel()


async def _write(connection: Connection) -> None:
    """Write the outbox to the socket until it is empty, or the connection is closed.

    The frames that wait go to the socket together, up to ``WRITE_FRAMES`` or about
    ``WRITE_BYTES`` at a time: a window of a sync is hundreds of frames, each a system call
    when written alone.
    """
    websocket = connection.websocket
    try:
        while True:
            frames = connection.outbox.pop_frames(WRITE_FRAMES, WRITE_BYTES)
            if frames:
                await _send_frames(websocket, frames)
                for frame in frames:
                    if isinstance(frame, Delivered):
                        observability.count_pushed(frame.frame, frame.consumed_at)
                    else:
                        observability.count_frame_sent(frame)
                continue
            item = connection.outbox.pop()
            if item is None:
                break
            assert isinstance(
                item, CloseRequest
            )  # pop_frames took every frame before it
            await _close(websocket, item.code, item.reason)
            return
    except ConnectionClosed:
        return
    # Empty, with no await since the last look: the next frame queued starts a writer.
    connection.writer = None


async def _send_frames(
    websocket: ServerConnection, frames: list[bytes | Delivered]
) -> None:
    """Send frames as text messages, serialised together and written at once
    (``TrackedConnection.send_data``); raises ``ConnectionClosed`` as ``send`` does."""
    if len(frames) == 1:
        frame = frames[0]
        await websocket.send(
            frame.frame if isinstance(frame, Delivered) else frame, text=True
        )
        return
    # What ``send`` does for one message, for each (the gateway never fragments).
    async with websocket.send_context():
        for frame in frames:
            websocket.protocol.send_text(
                frame.frame if isinstance(frame, Delivered) else frame
            )


def _unwatch_deadline(connection: Connection) -> None:
    if connection.deadline_timer is not None:
        connection.deadline_timer.cancel()
        connection.deadline_timer = None


async def _close(websocket: ServerConnection, code: CloseCode, reason: str) -> None:
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await websocket.close(code, reason)
    except TimeoutError:
        websocket.transport.abort()


async def _discard_incoming(websocket: ServerConnection) -> None:
    """Read and drop frames until the connection is closed."""
    try:
        async for _ in websocket:
            pass
    except ConnectionClosed:
        pass


@asynccontextmanager
async def serve_clients(
    settings: Settings,
    bus: Bus,
    hub: Hub,
    mids: MidFactory,
    jwks: JwksClient | None = None,
) -> AsyncIterator[Server]:
    """Listen for clients; on exit, close every connection with 1001 (going away).

    ``jwks``: the identity provider's keys, when ``SWITCHBOARD_JWKS_URL`` is set.
    """
    clients = ClientServer(settings, bus, hub, mids, jwks)
    async with serve(
        clients.serve_connection,
        settings.host,
        settings.port,
        process_request=clients.check_request,
        # Checked in check_request as well, which logs the refusal; kept here as the
        # library's own guard.
        origins=(
            [Origin(origin) for origin in settings.allowed_origins]
            if settings.allowed_origins is not None
            else None
        ),
        create_connection=TrackedConnection,
        compression=settings.compression,
        max_size=settings.max_frame_bytes,
        ping_interval=None,  # one loop pings every connection: Liveness.run_pings
        close_timeout=CLOSE_TIMEOUT_S,
    ) as server:
        yield server
