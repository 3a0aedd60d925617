"""One client connection as the hub sees it: its session, its outbox, its ack account.

``ws.py`` runs the connection (a reader, and a writer while frames wait); the hub pushes frames
to its outbox and asks it to close. What the client has not acknowledged is its ``Account``
(``acks.py``).
"""

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import structlog
from websockets.asyncio.server import ServerConnection

from gateway.acks import Account
from gateway.session import Session
from proto.codes import CloseCode

log = structlog.get_logger()

SENDS_IN_FLIGHT = 100
"""Sends of one connection waiting for their confirms at once; the reader waits for more."""


@dataclass(frozen=True, slots=True)
class CloseRequest:
    code: CloseCode
    reason: str


class Delivered(NamedTuple):
    """A frame of a delivery from the gateway's queue, for the push histogram
    (``observability.PUSH``)."""

    frame: bytes
    consumed_at: float
    """``time.monotonic()`` when the hub took the delivery from the queue."""


OutboxItem = bytes | Delivered | CloseRequest


class Outbox:
    """A connection's frames waiting for its writer: a bounded FIFO.

    What ``asyncio.Queue`` does here, in a fraction of its memory: a queue holds four deques,
    about 3 KiB per idle connection; this holds one deque, and only while frames wait. Nobody
    waits on it: a frame put into it starts a writer when none runs (``Connection.push``).
    """

    __slots__ = ("_items", "_maxsize")

    def __init__(self, maxsize: int) -> None:
        self._items: deque[OutboxItem] | None = None
        self._maxsize = maxsize

    def put_nowait(self, item: OutboxItem) -> bool:
        """Queue an item; False when ``maxsize`` items wait already."""
        if self._items is None:
            self._items = deque()
        elif len(self._items) >= self._maxsize:
            return False
        self._items.append(item)
        return True

    def pop(self) -> OutboxItem | None:
        """The oldest item, or None when none waits."""
        if self._items is None:
            return None
        item = self._items.popleft()
        if not self._items:
            self._items = None
        return item

    def pop_frames(self, most: int, most_bytes: int) -> list[bytes | Delivered]:
        """The oldest frames, up to ``most`` of them and about ``most_bytes`` (at least one),
        stopping before a close request; empty when none waits before it."""
        frames: list[bytes | Delivered] = []
        items = self._items
        size = 0
        while items and len(frames) < most and size < most_bytes:
            item = items[0]
            if isinstance(item, CloseRequest):
                break
            items.popleft()
            frames.append(item)
            size += len(item.frame if isinstance(item, Delivered) else item)
        if items is not None and not items:
            self._items = None
        return frames

    def __bool__(self) -> bool:
        return self._items is not None


@dataclass(eq=False, slots=True)
class Connection:
    """A client connection: its protocol state, outgoing frames and unacknowledged messages.

    An idle connection holds no task of its own besides its reader: a writer is started in
    the connection's task group when a frame is queued, and ends once the outbox is empty.
    """

    session: Session
    websocket: ServerConnection
    outbox: Outbox
    write: Callable[["Connection"], Coroutine[Any, Any, None]]
    """Writes the outbox to the socket until it is empty (``ws.py``): a writer's body."""
    account: Account = field(init=False)
    """What the client has not acknowledged yet (``acks.Ledger`` decides about it)."""
    tasks: asyncio.TaskGroup | None = None
    """The connection's task group, while its reader runs; None before and after: frames
    queued then wait (the hub hands over what the client did not acknowledge)."""
    writer: asyncio.Task[None] | None = None
    """The task writing the outbox, while one runs; it is set back to None when it finds the
    outbox empty, and stays once it ended the connection (a close, or the socket closed)."""
    _sending: asyncio.Semaphore | None = None
    deadline_timer: asyncio.TimerHandle | None = None
    """Closes the connection when its init, idle or token deadline passes (``ws.py``)."""
    is_timed_out: bool = False
    """A deadline passed: the connection is being closed, and no frame of it is read."""
    registration: asyncio.Future[None] | None = None
    """From ``init`` until the router's ``ready`` (or its refusal, a close): the reader reads
    no frame meanwhile, so a connection over the uid's connection cap sends nothing."""
    acks_waiting: list[str] | None = None
    """Acknowledged mids for the offline store that no forwarder has taken yet
    (``perform.Performer``); None until the first."""
    ack_forwarders: int = 0
    """Forwarders of acks running for this connection (one, unless the broker is slow)."""

    def __post_init__(self) -> None:
        self.account = Account(self.session)

    @property
    def is_closing(self) -> bool:
        return self.account.is_closing

    @property
    def sending(self) -> asyncio.Semaphore:
        """Sends published and not yet confirmed (see ``perform.Performer.perform``); made at
        the first send, as a connection that only listens never needs it."""
        if self._sending is None:
            self._sending = asyncio.Semaphore(SENDS_IN_FLIGHT)
        return self._sending

    def start_writing(self, tasks: asyncio.TaskGroup) -> None:
        """The reader runs in ``tasks``: writers may be started there from now on."""
        self.tasks = tasks
        self._wake_writer()

    def stop_writing(self) -> None:
        """The reader is done: no writer is started any more (the group is ending)."""
        self.tasks = None

    def registered(self) -> None:
        """The router registered the connection (or refused it): the reader may go on."""
        if self.registration is not None and not self.registration.done():
            self.registration.set_result(None)

    def push(self, frame: bytes, consumed_at: float | None = None) -> bool:
        """Queue a frame for the writer; False when the client is too far behind.

        ``consumed_at``: when the delivery that brings the frame was consumed, for the push
        histogram; None for the gateway's own replies.
        """
        if self.is_closing:
            return False
        item = frame if consumed_at is None else Delivered(frame, consumed_at)
        if not self.outbox.put_nowait(item):
            return False
        self._wake_writer()
        return True

    def request_close(self, code: CloseCode, reason: str) -> None:
        """Close after the frames already queued."""
        if self.is_closing:
            return
        self.account.is_closing = True
        self.registered()  # a reader waiting for ready is to stop instead
        if not self.outbox.put_nowait(CloseRequest(code, reason)):
            # The client is not reading: it would not read a close frame either.
            log.info("connection_aborted", code=code.name.lower())
            self.websocket.transport.abort()
            return
        self._wake_writer()

    def _wake_writer(self) -> None:
        if self.writer is None and self.tasks is not None and self.outbox:
            self.writer = self.tasks.create_task(self.write(self))
