"""Where a syncing connection stands in its uid's inbox: what to push now, hold, or ask for.

Pure, beside ``admission.py``. A connection that sent ``init`` with ``since`` gets the entries of
its uid's inbox after ``since`` in order, from two sources that overlap: the store's windows (the
entries committed when each window was read) and live copies (each with its ``seq``), which may
come before, between or after the windows, and out of order. A ``SyncCursor`` merges them:

* ``cursor`` is the highest ``seq`` pushed or skipped; everything at or below it is done, so a
  copy at or below it (it came both ways) is dropped.
* Until the last window of the sync (``more`` false) every live copy is held; then ``synced``
  is pushed with the window's end, and the held copies follow in ``seq`` order.
* After ``synced`` a live copy that is next (``cursor + 1``) is pushed at once, with the held
  ones it unblocks. One that leaves a gap is held, and the hub watches the gap
  (``WatchGap``): if it is still open after ``SWITCHBOARD_SYNC_GAP_WAIT_S``, ``on_gap_timeout``
  asks for a window from the cursor, which the store answers at once, since every ``seq`` a
  gateway is told of is committed.
* At most ``max_held`` copies are held; one past that is dropped (the inbox keeps it) and a
  window from the cursor is asked for once the held ones are pushed.
* Messages this connection sent are not pushed back to it (it has ``sent``): their entries
  only move the cursor (``on_sent``, and live copies without a frame: ``advance`` items).

Seqs of a uid are consecutive (the store numbers at commit, with no gap), so a missing ``seq`` is
one that has not arrived yet, never one that does not exist; entries that retention deleted are
absent from windows, whose end (``to_seq``) says how far they reach.
"""

from collections import OrderedDict
from dataclasses import dataclass

MAX_SENT_MIDS = 1000
"""Mids this connection sent that are remembered until their entry comes (the oldest go first)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry of the inbox as it reached the gateway."""

    seq: int
    mid: str
    frame: bytes | None
    """The frame to push (with its ``seq``); None: nothing to push (the connection sent it)."""


@dataclass(frozen=True, slots=True)
class Push:
    entry: Entry


@dataclass(frozen=True, slots=True)
class Synced:
    """Push ``{"type":"synced","seq":SEQ}``: every entry up to ``seq`` came before it."""

    seq: int


@dataclass(frozen=True, slots=True)
class AskWindow:
    """Ask the store for the entries after ``since`` (``gateway.sync``)."""

    since: int


@dataclass(frozen=True, slots=True)
class WatchGap:
    """A copy is held behind a missing ``seq``: call ``on_gap_timeout`` after the gap wait."""


Effect = Push | Synced | AskWindow | WatchGap


class SyncCursor:
    """One syncing connection's place in its inbox; each method returns effects, in order."""

    def __init__(self, since: int, max_held: int) -> None:
        self._cursor = since
        self._max_held = max_held
        self._held: dict[int, Entry] = {}
        self._sent: OrderedDict[str, None] = OrderedDict()
        self._synced = False
        self._dropped = False
        """A copy past ``max_held`` was dropped: a window must bring it."""
        self._asked = False
        """A window was asked for and has not come."""

    @property
    def cursor(self) -> int:
        return self._cursor

    @property
    def is_synced(self) -> bool:
        return self._synced

    @property
    def held(self) -> int:
        return len(self._held)

    def on_sent(self, mid: str) -> None:
        """The connection sent ``mid`` (it got ``sent``): its entry moves the cursor only."""
        self._sent[mid] = None
        if len(self._sent) > MAX_SENT_MIDS:
            self._sent.popitem(last=False)

    def on_live(self, entry: Entry) -> list[Effect]:
        """A live copy (or an ``advance``: ``entry.frame`` is None) reached the connection."""
        if entry.seq <= self._cursor or entry.seq in self._held:
            return []
        if len(self._held) >= self._max_held:
            self._dropped = True
            return []
        self._held[entry.seq] = entry
        if not self._synced:
            return []
        effects = self._drain()
        if self._held and not self._asked:
            effects.append(WatchGap())
        return effects

    def on_dropped(self) -> list[Effect]:
        """A live copy was not taken (the connection holds its cap of unacknowledged messages):
        a window from the cursor brings it once the held copies are pushed."""
        self._dropped = True
        if self._synced and not self._held and not self._asked:
            return [self._ask()]
        return []

    def on_window(self, entries: list[Entry], to_seq: int, more: bool) -> list[Effect]:
        """A window of the store: ``entries`` (in ``seq`` order) are all the inbox kept of
        ``(since, to_seq]``; ``more``: entries follow ``to_seq`` in this sync.

        The last window of the sync pushes ``synced``. A window that reaches no further than
        the cursor brings nothing new (a store answered a request twice), except when the
        sync's last one ends below the cursor: the inbox is not the one the client knew (a
        database reset), and the connection starts again at its head.
        """
        self._asked = False
        effects: list[Effect] = []
        if to_seq < self._cursor and not self._synced and not more:
            self._cursor = to_seq
            self._held = {seq: e for seq, e in self._held.items() if seq > to_seq}
        for entry in entries:
            if entry.seq > self._cursor:
                held = self._held.get(entry.seq)
                if held is not None and held.frame is None:
                    entry = held  # an advance came first: the connection sent it
                effects.extend(self._advance_to(entry))
        self._cursor = max(self._cursor, to_seq)
        for seq in [seq for seq in self._held if seq <= self._cursor]:
            del self._held[seq]
        if not more and not self._synced:
            self._synced = True
            effects.append(Synced(self._cursor))
        if self._synced:
            effects.extend(self._drain())
            if more:
                effects.append(self._ask())
            elif self._held:
                effects.append(WatchGap())
        elif more:
            effects.append(self._ask())
        return effects

    def on_gap_timeout(self) -> list[Effect]:
        """The gap wait ended: ask for a window if a held copy still waits for a missing one."""
        if self._synced and self._held and not self._asked:
            return [self._ask()]
        return []

    def _drain(self) -> list[Effect]:
        """Push the held copies that follow the cursor without a gap; ask for a window when
        copies were dropped and none is held any more."""
        effects: list[Effect] = []
        while (entry := self._held.pop(self._cursor + 1, None)) is not None:
            effects.extend(self._advance_to(entry))
        if self._dropped and not self._held and not self._asked:
            effects.append(self._ask())
        return effects

    def _advance_to(self, entry: Entry) -> list[Effect]:
        self._cursor = entry.seq
        if entry.mid in self._sent:
            del self._sent[entry.mid]
            return []
        return [] if entry.frame is None else [Push(entry)]

    def _ask(self) -> AskWindow:
        self._asked = True
        self._dropped = False
        return AskWindow(self._cursor)
