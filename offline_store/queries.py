"""What the offline store makes of the queries of ``<ns>.offline.queries`` (history on), and
their answers (``docs/history.md``, sections 4.3 and 6.4).

Pure: no I/O, no clock (the retention's cutoff is computed from a time given). A query is a
client's ``history`` or ``conversations`` frame (``HistoryAsked``, ``ConversationsAsked``,
answered to its connection through its gateway, as replay windows are) or a backend's
``api.history``, ``api.conversations`` or ``api.message`` (answered on its ``reply_to`` with
its ``correlation_id``). Pages are read newest first, one row more than asked (that row says
``more``), and cut at a quarter of ``SWITCHBOARD_MAX_AMQP_MESSAGE_BYTES``: 100 frames of
64 KiB would not fit one broker message. The SQL is in ``query_tables.py``.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from proto import envelopes, frames, sync
from proto.codes import ErrorCode
from proto.commands import RefusedCommand, decode_command_body, error_reply
from proto.envelopes import Delivery, DeliveryItem, Target
from proto.errors import BadEnvelope
from proto.frames import (
    ConversationsPage,
    GroupConversation,
    HistoryPage,
    PeerConversation,
    with_seq,
)
from proto.items import DECODE_ERRORS, reason_of
from proto.names import API_KEY_PREFIX, KEY_CONVERSATIONS, KEY_HISTORY

NO_BEFORE = 2**63 - 1
"""``before`` when a query gives none: above every ``seq`` (a ``bigint``)."""
MS_PER_DAY = 86_400_000
PAGE_SHARE = 4
"""A page's frames take at most this share of ``SWITCHBOARD_MAX_AMQP_MESSAGE_BYTES``."""
PEER_PREFIX = "u:"
GROUP_PREFIX = "g:"

_COMMAND_DECODERS = {
    name: msgspec.json.Decoder(command)
    for name, command in sync.HISTORY_COMMANDS.items()
}


@dataclass(frozen=True, slots=True)
class Asker:
    """The connection that sent a frame: its answer goes to its gateway, for it alone."""

    uid: str
    gateway_id: str
    conn_id: str
    client_id: str


@dataclass(frozen=True, slots=True)
class Caller:
    """A backend that sent a command: its answer goes to ``reply_to``; none without one."""

    reply_to: str
    correlation_id: str


@dataclass(frozen=True, slots=True)
class ReadHistory:
    """A page of ``uid``'s conversation ``conv``: entries with ``seq < before``."""

    uid: str
    conv: str
    before: int
    limit: int


@dataclass(frozen=True, slots=True)
class ReadConversations:
    """A page of ``uid``'s conversations whose last entry has ``seq < before``."""

    uid: str
    before: int
    limit: int


@dataclass(frozen=True, slots=True)
class ReadMessage:
    """One message by mid; with ``uid``, as that uid's inbox holds it (with its ``seq``)."""

    mid: str
    uid: str | None


Read = ReadHistory | ReadConversations | ReadMessage


@dataclass(frozen=True, slots=True)
class Query:
    """One message of the queue: what to read (or why not), and who gets the answer."""

    read: Read | RefusedCommand
    to: Asker | Caller | None
    """None: a command without ``reply_to`` (served for nothing; only a refusal is logged)."""


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """An entry of a history page: its ``seq`` in the asker's inbox and the frame without it."""

    seq: int
    frame: str


@dataclass(frozen=True, slots=True)
class ConversationRow:
    """A conversation of a page, with what its unread count is made of."""

    conv: str
    last_seq: int
    frame: str
    """The last message's frame, without ``seq``."""
    read_mid: str | None
    received: int
    read_received: int
    expired: int


def conversation_key(peer: str | None, group: str | None) -> str:
    """The key of a conversation in SQL: ``u:<peer>`` or ``g:<group>`` (``inbox.py``)."""
    return GROUP_PREFIX + group if group is not None else PEER_PREFIX + (peer or "")


def cutoff_mid(now_ms: int, history_days: float) -> str:
    """The smallest mid history keeps: 12 hex digits of the Unix milliseconds
    ``history_days`` ago, which every mid begins with (``proto/mids.py``); "" keeps all.

    Args:
        now_ms: the current Unix time in milliseconds.
        history_days: ``SWITCHBOARD_HISTORY_DAYS``; 0 keeps everything.
    """
    if history_days <= 0:
        return ""
    return f"{max(0, now_ms - round(history_days * MS_PER_DAY)):012x}"


def decode_query(
    routing_key: str,
    body: bytes,
    reply_to: str,
    correlation_id: str,
    max_command_bytes: int,
) -> Query:
    """Decode one message of ``<ns>.offline.queries`` by its routing key.

    Args:
        routing_key: ``gateway.history``, ``gateway.conversations`` or ``api.<command>``.
        body: the AMQP body.
        reply_to: a command's ``reply_to`` ("" when none).
        correlation_id: a command's ``correlation_id``.
        max_command_bytes: the largest command body decoded (``SWITCHBOARD_MAX_COMMAND_BYTES``).

    Returns:
        The query; a command that cannot be served is ``RefusedCommand``
        (``unknown_command``, or what ``proto.commands.decode_command_body`` refuses), as the
        router refuses other commands.

    Raises:
        BadEnvelope: a gateway's envelope that does not decode (it is dead-lettered).
    """
    if routing_key in (KEY_HISTORY, KEY_CONVERSATIONS):
        try:
            if routing_key == KEY_HISTORY:
                asked_history = sync.decode_history_asked(body)
                return Query(
                    ReadHistory(
                        asked_history.uid,
                        conversation_key(asked_history.peer, asked_history.group),
                        asked_history.before or NO_BEFORE,
                        asked_history.limit,
                    ),
                    _asker(asked_history),
                )
            asked = sync.decode_conversations_asked(body)
        except DECODE_ERRORS as exc:
            raise BadEnvelope(reason_of(exc)) from exc
        return Query(
            ReadConversations(asked.uid, asked.before or NO_BEFORE, asked.limit),
            _asker(asked),
        )
    caller = Caller(reply_to, correlation_id) if reply_to else None
    return Query(_decode_command(routing_key, body, max_command_bytes), caller)


def _asker(asked: sync.HistoryAsked | sync.ConversationsAsked) -> Asker:
    return Asker(asked.uid, asked.gateway_id, asked.conn_id, asked.client_id)


def _decode_command(
    routing_key: str, body: bytes, max_bytes: int
) -> Read | RefusedCommand:
    name = routing_key.removeprefix(API_KEY_PREFIX)
    decoder = (
        _COMMAND_DECODERS.get(name) if routing_key.startswith(API_KEY_PREFIX) else None
    )
    if decoder is None:
        return RefusedCommand(ErrorCode.UNKNOWN_COMMAND, "no such command")
    command = decode_command_body(decoder, body, max_bytes)
    if isinstance(command, RefusedCommand):
        return command
    match command:
        case sync.ApiHistory() as history:
            conv = conversation_key(history.peer, history.group)
            return ReadHistory(
                history.uid, conv, int(history.before or NO_BEFORE), int(history.limit)
            )
        case sync.ApiConversations() as conversations:
            before = int(conversations.before or NO_BEFORE)
            return ReadConversations(
                conversations.uid, before, int(conversations.limit)
            )
        case sync.ApiMessage(mid=mid, uid=uid):
            return ReadMessage(mid, uid)
        case _:
            raise ValueError(f"{name!r} is no history command")


def page_budget(max_message_bytes: int) -> int:
    """The most bytes of frames in one page: a quarter of the largest AMQP message."""
    return max_message_bytes // PAGE_SHARE


def history_page(
    rows: Sequence[HistoryRow], limit: int, budget_bytes: int
) -> tuple[list[bytes], bool]:
    """A history page from rows read newest first (up to ``limit + 1``).

    Returns:
        The frames oldest first, each with its ``seq``, and ``more``: older entries remain
        (the extra row was read, or the page was cut at ``budget_bytes``; the newest frame is
        kept whatever its size, so that paging always moves on).
    """
    more = len(rows) > limit
    kept: list[bytes] = []
    used = 0
    for row in rows[:limit]:
        frame = with_seq(row.frame.encode(), row.seq)
        used += len(frame) + 1
        if kept and used > budget_bytes:
            more = True
            break
        kept.append(frame)
    kept.reverse()
    return kept, more


def unread_count(received: int, read_received: int, expired: int) -> int:
    """Messages from others after the read marker that retention kept: entries expire
    oldest first, so those past the greater of the two are the unread ones left."""
    return max(0, received - max(read_received, expired))


def conversation_items(
    rows: Sequence[ConversationRow], budget_bytes: int
) -> list[bytes]:
    """The encoded items of a conversations page, in the rows' order (most recent first),
    cut at ``budget_bytes`` (the first item is kept whatever its size)."""
    items: list[bytes] = []
    used = 0
    for row in rows:
        last = msgspec.Raw(with_seq(row.frame.encode(), row.last_seq))
        unread = unread_count(row.received, row.read_received, row.expired)
        name = row.conv[len(PEER_PREFIX) :]
        item: PeerConversation | GroupConversation
        if row.conv.startswith(GROUP_PREFIX):
            item = GroupConversation(
                group=name, last=last, unread=unread, read=row.read_mid
            )
        else:
            item = PeerConversation(
                peer=name, last=last, unread=unread, read=row.read_mid
            )
        encoded = frames.encode(item)
        used += len(encoded) + 1
        if items and used > budget_bytes:
            break
        items.append(encoded)
    return items


def history_answer(to: Asker | Caller, page: list[bytes], more: bool) -> bytes:
    """The ``history`` frame for a connection, or the reply to ``api.history``."""
    messages = [msgspec.Raw(frame) for frame in page]
    if isinstance(to, Asker):
        return frames.encode(HistoryPage(id=to.client_id, messages=messages, more=more))
    return envelopes.encode(sync.HistoryReply(messages=messages, more=more))


def conversations_answer(to: Asker | Caller, items: list[bytes]) -> bytes:
    """The ``conversations`` frame for a connection, or the reply to ``api.conversations``."""
    raw = [msgspec.Raw(item) for item in items]
    if isinstance(to, Asker):
        return frames.encode(ConversationsPage(id=to.client_id, items=raw))
    return envelopes.encode(sync.ConversationsReply(items=raw))


def message_answer(frame: str | None, seq: int | None) -> bytes:
    """The reply to ``api.message``: the frame (with ``seq`` when read from an inbox), or
    ``not_found`` when none was read."""
    if frame is None:
        return error_answer(
            None, RefusedCommand(ErrorCode.NOT_FOUND, "no such message in that inbox")
        )
    encoded = frame.encode()
    if seq is not None:
        encoded = with_seq(encoded, seq)
    return envelopes.encode(sync.MessageReply(message=msgspec.Raw(encoded)))


def error_answer(to: Asker | Caller | None, refused: RefusedCommand) -> bytes:
    """An ``error`` frame for a connection, or an ``ErrorReply`` for a backend."""
    if isinstance(to, Asker):
        return frames.encode(
            frames.Error(code=refused.code, message=refused.reason, id=to.client_id)
        )
    return error_reply(refused)


def delivery_to(asker: Asker, frame: bytes) -> bytes:
    """A ``Delivery`` of one frame to the asking connection, for its gateway's queue. Not
    durable: a connection that closed meanwhile asks again when it comes back."""
    item = DeliveryItem(
        frame=msgspec.Raw(frame), targets=[Target(asker.uid, asker.conn_id)]
    )
    return envelopes.encode(Delivery(items=[item]))
