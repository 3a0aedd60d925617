"""Envelopes and backend commands of history and sync (docs/history.md, section 7.2).

==========================  ===================  =====================================
routing key / queue          envelope             producer -> consumer
==========================  ===================  =====================================
router.sync                  SyncRequest          router -> offline store
gateway.sync                 SyncRequest          gateway -> offline store (next window)
gateway.history              HistoryAsked         gateway -> offline store
gateway.conversations        ConversationsAsked   gateway -> offline store
gateway.read                 ReadAsked            gateway -> offline store
store.receipts               Receipts             offline store -> router
api.history                  ApiHistory           backend -> offline store (HistoryReply)
api.conversations            ApiConversations     backend -> offline store
                                                  (ConversationsReply)
api.message                  ApiMessage           backend -> offline store (MessageReply)
==========================  ===================  =====================================

A sync window comes back as a ``Delivery`` with ``sync`` set (``envelopes.SyncWindow``); the
answers to the gateway's queries come back as deliveries of the ``history``, ``marked`` and
``conversations`` frames (``frames.py``) to the asking connection. While
``SWITCHBOARD_HISTORY`` is off none of these is published: gateways answer the frames, and
routers the commands, ``history_off``.

Names follow the identifier rule of ``proto/rules.py`` and numbers the bounds of the frames
they come from, checked while the body decodes, as for every envelope.
"""

from typing import Annotated

import msgspec

from proto.bases import Command, Envelope
from proto.frames import (
    DEFAULT_PAGE,
    MAX_PAGE,
    MAX_SEQ,
    Before,
    ConversationItem,
    MessageFrame,
    Mid,
    PageSize,
    Seq,
    check_conversation,
)
from proto.rules import Identifier


class SyncRequest(Envelope, frozen=True):
    """Read one window of ``uid``'s inbox after ``since`` for one connection.

    ``register``: first record the connection among the recent syncs of its uid (a router's
    request at ``init``), so that messages committed after the window's read reach it live;
    a gateway asking for the next window (or for a gap) sends false. ``limit``: at most this
    many entries (the store's ``SWITCHBOARD_SYNC_PAGE`` when 0 or larger).
    """

    uid: Identifier
    gateway_id: Identifier
    conn_id: Identifier
    since: Seq
    limit: Seq = 0
    register: bool = False


class HistoryAsked(Envelope, frozen=True):
    """A client's ``history`` frame; the store answers the connection with ``history``."""

    uid: Identifier
    gateway_id: Identifier
    conn_id: Identifier
    client_id: Identifier
    peer: Identifier | None = msgspec.field(name="with", default=None)
    group: Identifier | None = None
    before: Before | None = None
    limit: PageSize = DEFAULT_PAGE

    def __post_init__(self) -> None:
        check_conversation(self.peer, self.group)


class ConversationsAsked(Envelope, frozen=True):
    """A client's ``conversations`` frame; the store answers with ``conversations``."""

    uid: Identifier
    gateway_id: Identifier
    conn_id: Identifier
    client_id: Identifier
    before: Before | None = None
    limit: PageSize = DEFAULT_PAGE


class ReadAsked(Envelope, frozen=True):
    """A client's ``read`` frame; the store answers ``marked`` (or ``not_found``)."""

    uid: Identifier
    gateway_id: Identifier
    conn_id: Identifier
    client_id: Identifier
    mid: Mid


class ReceiptEntry(msgspec.Struct, frozen=True, array_like=True):
    """A receipt's entry in one inbox, ``[uid, seq]``."""

    uid: Identifier
    seq: Seq


class ReadingConnection(msgspec.Struct, frozen=True, array_like=True):
    """The connection whose ``read`` moved the marker, ``[uid, gateway_id, conn_id]``: it gets
    an advance of its cursor instead of the ``receipt`` frame."""

    uid: Identifier
    gateway_id: Identifier
    conn_id: Identifier


class ReceiptItem(Envelope, frozen=True):
    """``by`` read up to ``mid``: a receipt entry in each inbox of ``entries``."""

    by: Identifier
    mid: Mid
    origin: ReadingConnection
    entries: list[ReceiptEntry]


class Receipts(Envelope, frozen=True):
    """Read markers the store committed: the routers deliver a ``receipt`` frame to the online
    connections of each entry's uid, with that entry's ``seq``."""

    items: list[ReceiptItem]


# A backend's JSON encoder may write an integer as 2.0, which JSON Schema counts as an integer
# (the HTTP API's document says "integer"): commands take such a number, and keep it as an int.
MAX_EXACT_FLOAT = 2**53
"""The largest whole float a command's ``before`` may be: past it a float is no exact integer."""
WholeBefore = (
    Annotated[int, msgspec.Meta(ge=1, le=MAX_SEQ)]
    | Annotated[float, msgspec.Meta(ge=1, le=MAX_EXACT_FLOAT, multiple_of=1)]
)
WholePageSize = (
    Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE)]
    | Annotated[float, msgspec.Meta(ge=1, le=MAX_PAGE, multiple_of=1)]
)


def _keep_as_int(command: Command, *fields: str) -> None:
    """Turn the whole floats of these fields into ints (``before`` and ``limit``)."""
    for name in fields:
        value = getattr(command, name)
        if isinstance(value, float):
            msgspec.structs.force_setattr(command, name, int(value))


class ApiHistory(Command, frozen=True):
    """``api.history``: a page of ``uid``'s conversation with ``with`` (a uid) or ``group``,
    as the ``history`` frame gives it: ``before`` exclusive, ``limit`` 1 to 100."""

    uid: Identifier
    peer: Identifier | None = msgspec.field(name="with", default=None)
    group: Identifier | None = None
    before: WholeBefore | None = None
    limit: WholePageSize = DEFAULT_PAGE

    def __post_init__(self) -> None:
        check_conversation(self.peer, self.group)
        _keep_as_int(self, "before", "limit")


class ApiConversations(Command, frozen=True):
    """``api.conversations``: ``uid``'s conversations, as the ``conversations`` frame lists
    them."""

    uid: Identifier
    before: WholeBefore | None = None
    limit: WholePageSize = DEFAULT_PAGE

    def __post_init__(self) -> None:
        _keep_as_int(self, "before", "limit")


class ApiMessage(Command, frozen=True):
    """``api.message``: one message by mid (for a push notification); with ``uid``, as that
    uid's inbox holds it (with its ``seq``), and ``not_found`` when it does not."""

    mid: Mid
    uid: Identifier | None = None


class HistoryReply(Envelope, frozen=True):
    messages: list[MessageFrame]
    more: bool


class ConversationsReply(Envelope, frozen=True):
    items: list[ConversationItem]


class MessageReply(Envelope, frozen=True):
    message: MessageFrame


HISTORY_COMMANDS: dict[str, type[Command]] = {
    "history": ApiHistory,
    "conversations": ApiConversations,
    "message": ApiMessage,
}
"""The backend commands the offline store serves with history on; with it off, every router
answers them ``history_off``. Part of ``envelopes.COMMANDS``."""

encode = msgspec.json.Encoder().encode
decode_sync_request = msgspec.json.Decoder(SyncRequest).decode
decode_history_asked = msgspec.json.Decoder(HistoryAsked).decode
decode_conversations_asked = msgspec.json.Decoder(ConversationsAsked).decode
decode_read_asked = msgspec.json.Decoder(ReadAsked).decode
decode_receipts = msgspec.json.Decoder(Receipts).decode
