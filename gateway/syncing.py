"""The syncing connections of this gateway (history on, ``docs/history.md`` section 5).

A connection that sent ``init`` with ``since`` gets a ``SyncCursor`` (``cursor.py``) at its first
copy or window. The hub hands this module what ``sync_split.py`` took out of each delivery; the
cursor says what to push, when to push ``synced``, which window to ask for and which gap to
watch, and this module carries it out:

* a push is queued on the connection and counts against its cap of unacknowledged messages
  (held in the ledger like a replayed row: never handed over, its ack goes on to the store,
  which deletes the uid's undelivered row as for any ack);
* the store's windows are kept ahead of the cursor (``sync_split.Ahead``): the cursor gets
  what the connection has room for, and the rest once the client has acknowledged half of
  what the connection may hold, as replay windows are paced. The next window is asked
  (``gateway.sync``) as soon as no more than half of that is kept ahead, from where the entries
  kept end: it comes while the client acknowledges, and the store's round trip is not waited
  for between windows. Until ``synced`` a connection may hold ``window`` messages
  (``SWITCHBOARD_SYNC_WINDOW``) and keep as many ahead, after it ``max_unacked`` as any: sync
  entries pin no AMQP delivery, and a larger window takes fewer round trips to the store;
* a live copy that finds the connection at its cap is not taken: a window brings it later;
* a gap after ``synced`` is watched for ``SWITCHBOARD_SYNC_GAP_WAIT_S``, then a window is asked.
"""

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Container, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from gateway.acks import Ledger
from gateway.bus import Bus
from gateway.connection import Connection
from gateway.cursor import AskWindow, Effect, Entry, Push, SyncCursor, Synced, WatchGap
from gateway.handover import RETRY_S
from gateway.sync_split import Ahead, SyncSplit, take_ahead, with_window
from proto import frames
from proto.codes import CloseCode
from proto.names import KEY_SYNC_MORE
from proto.sync import SyncRequest, encode

log = structlog.get_logger()


MAX_CLOSED = 10_000
"""Syncing connections that closed, remembered (the oldest go first): the store keeps adding
them to their uid's messages for ``SWITCHBOARD_SYNC_GRACE_S`` (``recent_syncs``)."""


class SyncingIds:
    """The conn_ids of the syncing connections among ``connections``, and of those that closed
    lately, looked up one by one: their copies go to cursors, or nowhere, never to the store."""

    def __init__(
        self, connections: dict[str, Connection], closed: Container[str]
    ) -> None:
        self._connections = connections
        self._closed = closed

    def __contains__(self, conn_id: object) -> bool:
        if not isinstance(conn_id, str):
            return False
        connection = self._connections.get(conn_id)
        if connection is None:
            return conn_id in self._closed
        return Syncs.is_syncing(connection)


@dataclass(eq=False, slots=True)
class SyncState:
    """One syncing connection's cursor, and what waits to be asked or watched."""

    cursor: SyncCursor
    wants_window: bool = False
    """The cursor asked for a window: it gets the entries kept ahead once the client has
    acknowledged enough, or the store is asked for them."""
    ahead: Ahead | None = None
    """Entries the store sent that the connection had no room for yet."""
    is_asking: bool = False
    """A window was asked of the store and has not come."""
    is_watching_gap: bool = False


@dataclass(eq=False)
class Syncs:
    """Every syncing connection of this gateway, by conn_id."""

    bus: Bus
    gateway_id: str
    ledger: Ledger
    max_unacked: int
    window: int
    """What a connection may hold unacknowledged until ``synced`` (``SWITCHBOARD_SYNC_WINDOW``)."""
    gap_wait_s: float
    clock: Callable[[], float]
    spawn: Callable[[Coroutine[Any, Any, None]], None]
    states: dict[str, SyncState] = field(default_factory=dict)
    closed: OrderedDict[str, None] = field(default_factory=OrderedDict)
    """Syncing connections that closed lately (at most ``MAX_CLOSED``): a copy for one is
    dropped, as history keeps it, instead of handed over."""

    def syncing_ids(self, connections: dict[str, Connection]) -> SyncingIds:
        return SyncingIds(connections, self.closed)

    @staticmethod
    def is_syncing(connection: Connection) -> bool:
        return (
            connection.session.since is not None and connection.session.uid is not None
        )

    def since_of(self, connection: Connection) -> int | None:
        """Where a syncing connection stands (its ``init``'s ``since`` before its first
        copy); None for a replaying one. A re-announcement carries it (section 5.5)."""
        state = self.states.get(connection.session.conn_id)
        if state is not None:
            return state.cursor.cursor
        return connection.session.since

    def forget(self, connection: Connection) -> None:
        """A connection closed: drop its cursor, and remember it if it was syncing."""
        conn_id = connection.session.conn_id
        self.states.pop(conn_id, None)
        if self.is_syncing(connection):
            self.closed[conn_id] = None
            if len(self.closed) > MAX_CLOSED:
                self.closed.popitem(last=False)

    def _state(self, connection: Connection) -> SyncState:
        conn_id = connection.session.conn_id
        state = self.states.get(conn_id)
        if state is None:
            since = connection.session.since or 0
            state = SyncState(SyncCursor(since, self.max_unacked))
            self.states[conn_id] = state
        return state

    def handle(self, split: SyncSplit, connections: dict[str, Connection]) -> None:
        """Carry out what one delivery brings to syncing connections; never awaits."""
        for conn_id, entries in split.window_entries.items():
            connection = connections.get(conn_id)
            if connection is None or split.window is None:
                continue
            state = self._state(connection)
            state.is_asking = False
            state.ahead = with_window(
                state.ahead, entries, split.window.to_seq, split.window.more
            )
            self._feed(connection, state)
            self.continue_sync(connection)
        for conn_id, entries in split.live.items():
            connection = connections.get(conn_id)
            if connection is None:
                continue
            state = self._state(connection)
            for entry in entries:
                if self._is_full(connection, state) and entry.frame is not None:
                    effects = state.cursor.on_dropped()
                else:
                    effects = state.cursor.on_live(entry)
                self._perform(connection, state, effects)
            self.continue_sync(connection)

    def continue_sync(self, connection: Connection) -> None:
        """The client acknowledged (or timed out) some, or entries came: once the connection
        holds no more than half its cap, hand the cursor what it waits for from the entries
        kept ahead; and ask the store for the next entries while no more than half a cap's
        worth is kept ahead, so that they are here when the client has acknowledged these."""
        state = self.states.get(connection.session.conn_id)
        if state is None or (not state.wants_window and state.ahead is None):
            return
        if connection.is_closing or connection.session.uid is None:
            return
        room = self._room(state)
        while (
            state.wants_window
            and state.ahead is not None
            and len(connection.account.unacked) <= room // 2
            and not connection.is_closing
        ):
            self._feed(connection, state)
        self._ask_ahead(connection, state, room)

    def _feed(self, connection: Connection, state: SyncState) -> None:
        """Hand the cursor the entries kept ahead that the connection has room for."""
        assert state.ahead is not None
        free = self._room(state) - len(connection.account.unacked)
        entries, to_seq, more, state.ahead = take_ahead(
            state.ahead, free, state.cursor.cursor
        )
        state.wants_window = False
        self._perform(connection, state, state.cursor.on_window(entries, to_seq, more))

    def _ask_ahead(self, connection: Connection, state: SyncState, room: int) -> None:
        """Ask the store for the entries that follow what the cursor has or what is kept
        ahead, unless a window is on its way, or enough is kept ahead already."""
        uid = connection.session.uid
        if state.is_asking or uid is None or connection.is_closing:
            return
        if state.ahead is None:
            if not state.wants_window:
                return
            since, limit = state.cursor.cursor, room
        else:
            if not state.ahead.more or len(state.ahead.entries) > room // 2:
                return
            since, limit = state.ahead.to_seq, room - len(state.ahead.entries)
        state.is_asking = True
        request = SyncRequest(
            uid=uid,
            gateway_id=self.gateway_id,
            conn_id=connection.session.conn_id,
            since=since,
            limit=limit,
        )
        self.spawn(self._ask(connection, request))

    def continue_all(self, connections: dict[str, Connection]) -> None:
        """After the ack-timeout sweep: ask the windows that waited for room."""
        for conn_id, state in list(self.states.items()):
            connection = connections.get(conn_id)
            if connection is not None and state.wants_window:
                self.continue_sync(connection)

    def _room(self, state: SyncState) -> int:
        """Messages the connection may hold unacknowledged: a window's worth until ``synced``."""
        return self.max_unacked if state.cursor.is_synced else self.window

    def _is_full(self, connection: Connection, state: SyncState) -> bool:
        return len(connection.account.unacked) >= self._room(state)

    def _perform(
        self, connection: Connection, state: SyncState, effects: list[Effect]
    ) -> None:
        for effect in effects:
            match effect:
                case Push(entry=entry):
                    self._push(connection, entry)
                case Synced(seq=seq):
                    self._push_frame(connection, frames.encode(frames.Synced(seq=seq)))
                    log.info("synced", conn_id=connection.session.conn_id, seq=seq)
                case AskWindow():
                    # Carried out by the caller, in continue_sync.
                    state.wants_window = True
                case WatchGap():
                    if not state.is_watching_gap:
                        state.is_watching_gap = True
                        self.spawn(self._watch_gap(connection, state))

    def _push(self, connection: Connection, entry: Entry) -> None:
        assert entry.frame is not None  # the cursor pushes entries with a frame only
        if not self._push_frame(connection, entry.frame):
            return
        if entry.mid:
            deadline = self.ledger.ack_deadline(self.clock())
            self.ledger.hold_stored(
                connection.account, entry.mid, entry.frame, deadline
            )

    @staticmethod
    def _push_frame(connection: Connection, frame: bytes) -> bool:
        if connection.push(frame):
            return True
        connection.request_close(CloseCode.SLOW_CONSUMER, "too many frames waiting")
        return False

    async def _watch_gap(self, connection: Connection, state: SyncState) -> None:
        await asyncio.sleep(self.gap_wait_s)
        state.is_watching_gap = False
        if self.states.get(connection.session.conn_id) is not state:
            return
        effects = state.cursor.on_gap_timeout()
        if effects:
            log.info(
                "sync_gap_filled",
                conn_id=connection.session.conn_id,
                held=state.cursor.held,
            )
        self._perform(connection, state, effects)
        self.continue_sync(connection)

    async def _ask(self, connection: Connection, request: SyncRequest) -> None:
        body = encode(request)
        conn_id = connection.session.conn_id
        # Retried while the connection is open: nothing else would ask again.
        while conn_id in self.states and not connection.is_closing:
            try:
                await self.bus.publish_inbound(KEY_SYNC_MORE, body)
            except Exception:
                log.warning("sync_request_failed", conn_id=conn_id, exc_info=True)
                await asyncio.sleep(RETRY_S)
                continue
            log.debug("sync_requested", conn_id=conn_id, since=request.since)
            return
