"""One client connection as the hub sees it: its session, its outbox, its ack account.

``ws.py`` runs the connection (a reader and a writer); the hub pushes frames to its outbox and
asks it to close. What the client has not acknowledged is its ``Account`` (``acks.py``).
"""

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

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
    """A connection's frames waiting for its writer: a bounded FIFO with one waiting reader.

    What ``asyncio.Queue`` does for this single reader, in a fraction of its memory: a queue
    holds four deques, about 3 KiB per idle connection; this holds one deque, and only while
    frames wait.
    """

    __slots__ = ("_items", "_maxsize", "_waiter")

    def __init__(self, maxsize: int) -> None:
        self._items: deque[OutboxItem] | None = None
        self._maxsize = maxsize
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: OutboxItem) -> bool:
        """Queue an item; False when ``maxsize`` items wait already."""
        if self._items is None:
            self._items = deque()
        elif len(self._items) >= self._maxsize:
            return False
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        return True

    async def get(self) -> OutboxItem:
        """The oldest item, waiting for one if there is none."""
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = self._items.popleft()
        if not self._items:
            self._items = None
        return item


@dataclass(eq=False)
class Connection:
    """A client connection: its protocol state, outgoing frames and unacknowledged messages."""

    session: Session
    websocket: ServerConnection
    outbox: Outbox
    account: Account = field(init=False)
    """What the client has not acknowledged yet (``acks.Ledger`` decides about it)."""
    sending: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(SENDS_IN_FLIGHT)
    )
    """Sends published and not yet confirmed (see ``perform.Performer.perform``)."""
    registration: asyncio.Future[None] | None = None
    """From ``init`` until the router's ``ready`` (or its refusal, a close): the reader reads
    no frame meanwhile, so a connection over the uid's connection cap sends nothing."""

    def __post_init__(self) -> None:
        self.account = Account(self.session)

    @property
    def is_closing(self) -> bool:
        return self.account.is_closing

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
        if consumed_at is None:
            return self.outbox.put_nowait(frame)
        return self.outbox.put_nowait(Delivered(frame, consumed_at))

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
