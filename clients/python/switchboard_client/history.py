"""History, conversations, read markers, receipts and the sync cursor of the client.

With ``SWITCHBOARD_HISTORY=on`` every stored message and receipt a connection gets carries
``seq``, its place in the uid's inbox. The client keeps the highest one the application
processed in a ``SeqStore`` and sends it as ``since`` in every ``init``: the gateway then pushes
the entries after it, then ``synced`` (docs/history.md, section 5).
"""

import asyncio
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from switchboard_client.client import Message


class SeqStore(Protocol):
    """Where the highest processed ``seq`` lives between connections (and runs)."""

    def load(self) -> int | None:
        """The stored ``seq``; None when none was stored yet (``init`` then has no ``since``)."""
        ...

    def save(self, seq: int) -> None: ...


class MemorySeqStore:
    """The default: kept for this process only, so reconnects sync and a restart replays."""

    def __init__(self, seq: int | None = None) -> None:
        self.seq = seq

    def load(self) -> int | None:
        return self.seq

    def save(self, seq: int) -> None:
        self.seq = seq


class FileSeqStore:
    """The ``seq`` in a small file, written whole to a temporary file and renamed over it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> int | None:
        try:
            seq = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return seq if isinstance(seq, int) and seq >= 0 else None

    def save(self, seq: int) -> None:
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(str(seq))
        partial.replace(self.path)


class CallbackSeqStore:
    """The application's own storage: ``load()`` returns the ``seq`` (or None), ``save(seq)``."""

    def __init__(
        self, load: Callable[[], int | None], save: Callable[[int], None]
    ) -> None:
        self._load = load
        self._save = save

    def load(self) -> int | None:
        return self._load()

    def save(self, seq: int) -> None:
        self._save(seq)


SeqStoreOption = (
    SeqStore
    | str
    | os.PathLike[str]
    | tuple[Callable[[], int | None], Callable[[int], None]]
    | None
)
"""A ``Client``'s ``seq_store``: a store, a file path, a ``(load, save)`` pair, or None (memory)."""


def seq_store_of(option: SeqStoreOption) -> SeqStore:
    if option is None:
        return MemorySeqStore()
    if isinstance(option, str | os.PathLike):
        return FileSeqStore(option)
    if isinstance(option, tuple):
        load, save = option
        return CallbackSeqStore(load, save)
    return option


class Cursor:
    """The highest ``seq`` processed, read from its store once and saved when it rises."""

    def __init__(self, store: SeqStore) -> None:
        self.store = store
        self.seq = store.load()

    def processed(self, seq: int | None) -> None:
        if seq is not None and (self.seq is None or seq > self.seq):
            self.seq = seq
            self.store.save(seq)

    def synced(self, head: int) -> None:
        """``synced`` below the cursor: not the inbox the client knew (a reset database)."""
        if self.seq is not None and head < self.seq:
            self.seq = head
            self.store.save(head)


@dataclass(frozen=True, slots=True)
class Receipt:
    """``by`` read the conversation of ``mid`` up to it: the peer read one of your messages,
    or one of your other devices read a message sent to you."""

    by: str
    mid: str
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """A page of a conversation, oldest first; ``more`` when older messages remain (ask again
    with ``before=page.messages[0].seq``)."""

    messages: "list[Message]"
    more: bool


@dataclass(frozen=True, slots=True)
class Conversation:
    """One conversation of the uid: exactly one of ``with_`` (a 1:1 peer) and ``group``."""

    last: "Message"
    """Its last message, with the uid's ``seq``."""
    unread: int
    """Messages from others after the read marker."""
    read: str | None
    """The mid of the uid's own read marker, or None."""
    with_: str | None = None
    group: str | None = None


def history_frame(
    client_id: str,
    with_: str | None,
    group: str | None,
    before: int | None,
    limit: int,
) -> dict[str, Any]:
    if (with_ is None) == (group is None):
        raise ValueError("give exactly one of with_ and group")
    frame: dict[str, Any] = {"type": "history", "id": client_id}
    if with_ is not None:
        frame["with"] = with_
    else:
        frame["group"] = group
    if before is not None:
        frame["before"] = before
    frame["limit"] = limit
    return frame


def conversations_frame(
    client_id: str, before: int | None, limit: int
) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "conversations", "id": client_id, "limit": limit}
    if before is not None:
        frame["before"] = before
    return frame


def history_page(
    frame: dict[str, Any], message_of: "Callable[[dict[str, Any]], Message]"
) -> HistoryPage:
    messages = [message_of(m) for m in frame.get("messages", [])]
    return HistoryPage(messages, frame.get("more") is True)


def conversation_list(
    frame: dict[str, Any], message_of: "Callable[[dict[str, Any]], Message]"
) -> list[Conversation]:
    return [
        Conversation(
            last=message_of(item["last"]),
            unread=int(item.get("unread", 0)),
            read=item.get("read"),
            with_=item.get("with"),
            group=item.get("group"),
        )
        for item in frame.get("items", [])
    ]


class ReceiptStream:
    """Async iterator over receipts from the moment ``receipts()`` was first called; ends when
    the client stops."""

    def __init__(self, queue: "asyncio.Queue[Receipt | None]") -> None:
        self._queue = queue

    def __aiter__(self) -> "ReceiptStream":
        return self

    async def __anext__(self) -> Receipt:
        receipt = await self._queue.get()
        if receipt is None:
            self._queue.put_nowait(None)  # wake every other reader too
            raise StopAsyncIteration
        return receipt
