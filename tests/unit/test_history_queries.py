"""The offline store's history queries, without I/O (``offline_store/queries.py``)."""

import json

import msgspec
import pytest

from offline_store.queries import (
    NO_BEFORE,
    Asker,
    Caller,
    ConversationRow,
    HistoryRow,
    Query,
    ReadConversations,
    ReadHistory,
    ReadMessage,
    conversation_items,
    conversations_answer,
    cutoff_mid,
    decode_query,
    delivery_to,
    error_answer,
    history_answer,
    history_page,
    message_answer,
    page_budget,
    unread_count,
)
from proto import envelopes, frames, sync
from proto.codes import ErrorCode
from proto.commands import RefusedCommand
from proto.errors import BadEnvelope
from proto.mids import MidFactory
from proto.names import KEY_CONVERSATIONS, KEY_HISTORY, QUERY_COMMANDS

ASKER = Asker("carol", "gw1", "c1", "q1")
CALLER = Caller("replies", "corr")
TOO_DEEP = b'{"mid": "m", "x": ' + b"[" * 100 + b"]" * 100 + b"}"
"""A command whose unknown field nests deeper than a body may (``rules.MAX_BODY_DEPTH``)."""


def frame(mid: str, body: str = "1") -> str:
    message = frames.Message(
        mid=mid, sender="bob", body=msgspec.Raw(body.encode()), ts=1, to="carol"
    )
    return frames.encode(message).decode()


def decode(key: str, body: object, reply_to: str = "r") -> Query:
    encoded = body if isinstance(body, bytes) else json.dumps(body).encode()
    return decode_query(key, encoded, reply_to, "corr", 10_000)


def test_the_queries_commands_are_the_history_commands() -> None:
    assert set(QUERY_COMMANDS) == set(sync.HISTORY_COMMANDS)


def test_frames_become_reads_for_their_connection() -> None:
    asked = sync.encode(
        sync.HistoryAsked(
            uid="carol", gateway_id="gw1", conn_id="c1", client_id="q1", peer="bob"
        )
    )
    query = decode_query(KEY_HISTORY, asked, "", "", 10)
    assert query.read == ReadHistory("carol", "u:bob", NO_BEFORE, 50)
    assert query.to == ASKER
    asked = sync.encode(
        sync.ConversationsAsked(
            uid="carol", gateway_id="gw1", conn_id="c1", client_id="q1", before=9
        )
    )
    query = decode_query(KEY_CONVERSATIONS, asked, "", "", 10)
    assert query.read == ReadConversations("carol", 9, 50)


def test_a_bad_envelope_from_a_gateway_is_dead_lettered() -> None:
    with pytest.raises(BadEnvelope):
        decode_query(KEY_HISTORY, b'{"uid":"carol"}', "", "", 10)


def test_commands_become_reads_or_refusals() -> None:
    history = decode("api.history", {"uid": "c", "group": "g", "before": 4.0})
    assert history == decode_query(  # a whole float is an integer
        "api.history", b'{"uid":"c","group":"g","before":4}', "r", "corr", 10_000
    )
    assert history.read == ReadHistory("c", "g:g", 4, 50)
    assert history.to == Caller("r", "corr")
    listed = decode("api.conversations", {"uid": "c", "limit": 3})
    assert listed.read == ReadConversations("c", NO_BEFORE, 3)
    message = decode("api.message", {"mid": "m1"})
    assert message.read == ReadMessage("m1", None)
    for key, body, code, path in (
        ("api.history", {"uid": "c"}, ErrorCode.INVALID_FIELD, "`$`"),
        (
            "api.history",
            {"uid": "c", "with": "b", "limit": 0},
            ErrorCode.INVALID_FIELD,
            "`$.limit`",
        ),
        ("api.message", {"mid": "a b"}, ErrorCode.INVALID_FIELD, "`$.mid`"),
        ("api.message", b"{nope", ErrorCode.INVALID_JSON, ""),
        ("api.nothing", {}, ErrorCode.UNKNOWN_COMMAND, ""),
        ("api.message", b"{" + b" " * 20_000 + b"}", ErrorCode.TOO_LARGE, ""),
        # Too deep is refused by the body rule, as the router refuses it.
        ("api.message", TOO_DEEP, ErrorCode.INVALID_FIELD, "levels deep"),
    ):
        refused = decode(key, body).read
        assert isinstance(refused, RefusedCommand)
        assert refused.code == code
        assert refused.reason.endswith(path)
    assert decode("api.message", {"mid": "m"}, reply_to="").to is None


def test_the_cutoff_is_the_mid_prefix_of_that_age() -> None:
    assert cutoff_mid(1_700_000_000_000, 0) == ""
    cutoff = cutoff_mid(1_700_000_086_400, 1.0 / 1000)  # 86.4 s
    assert cutoff == f"{1_700_000_000_000:012x}"
    factory = MidFactory("0123456789")
    assert factory.next_mid(1_699_999_999_999) < cutoff
    assert factory.next_mid(1_700_000_000_000) >= cutoff
    assert cutoff_mid(5, 1.0) == "000000000000"


def test_a_page_is_oldest_first_with_seq_and_more_from_the_extra_row() -> None:
    rows = [HistoryRow(seq, frame(f"m{seq}")) for seq in (9, 7, 4)]  # newest first
    page, more = history_page(rows, 2, 10_000)
    assert [json.loads(f)["seq"] for f in page] == [7, 9]
    assert json.loads(page[0])["mid"] == "m7"
    assert more is True
    page, more = history_page(rows, 3, 10_000)
    assert ([json.loads(f)["seq"] for f in page], more) == ([4, 7, 9], False)
    assert history_page([], 50, 100) == ([], False)


def test_a_page_is_cut_by_bytes_and_keeps_one_frame() -> None:
    rows = [
        HistoryRow(seq, frame(f"m{seq}", '"' + "x" * 100 + '"')) for seq in (3, 2, 1)
    ]
    one = len(frames.with_seq(rows[0].frame.encode(), 3)) + 1
    page, more = history_page(rows, 3, 2 * one + 1)
    assert ([json.loads(f)["seq"] for f in page], more) == ([2, 3], True)
    page, more = history_page(rows, 3, 1)
    assert ([json.loads(f)["seq"] for f in page], more) == ([3], True)
    assert page_budget(65536) == 16384


def test_unread_counts_what_is_after_the_marker_and_was_kept() -> None:
    assert unread_count(10, 0, 0) == 10
    assert unread_count(10, 4, 0) == 6
    assert unread_count(10, 4, 7) == 3  # seven expired, the marker among them
    assert unread_count(10, 8, 7) == 2
    assert unread_count(3, 0, 5) == 0


def test_conversation_items_take_their_shape_and_are_cut_by_bytes() -> None:
    rows = [
        ConversationRow("g:team", 8, frame("m8"), None, 5, 2, 1),
        ConversationRow("u:bob", 6, frame("m6"), "m5", 3, 3, 0),
    ]
    items = [json.loads(i) for i in conversation_items(rows, 10_000)]
    assert items[0] == {
        "group": "team",
        "last": {**json.loads(frame("m8")), "seq": 8},
        "unread": 3,
        "read": None,
    }
    assert (items[1]["with"], items[1]["unread"], items[1]["read"]) == ("bob", 0, "m5")
    for raw in conversation_items(rows, 10_000):
        frames.decode_conversation_item(raw)
    assert len(conversation_items(rows, 1)) == 1


def test_answers_go_to_the_connection_or_the_backend() -> None:
    page = [frames.with_seq(frame("m1").encode(), 1)]
    answer = frames.decode_server_frame(history_answer(ASKER, page, True))
    assert isinstance(answer, frames.HistoryPage)
    assert (answer.id, answer.more, len(answer.messages)) == ("q1", True, 1)
    reply = json.loads(history_answer(CALLER, page, False))
    assert reply == {"messages": [json.loads(page[0])], "more": False}
    listed = frames.decode_server_frame(conversations_answer(ASKER, []))
    assert listed == frames.ConversationsPage(id="q1", items=[])
    assert json.loads(conversations_answer(CALLER, [])) == {"items": []}
    assert json.loads(message_answer(frame("m1"), 4))["message"]["seq"] == 4
    assert "seq" not in json.loads(message_answer(frame("m1"), None))["message"]
    missing = json.loads(message_answer(None, None))
    assert missing["error"]["code"] == ErrorCode.NOT_FOUND
    error = json.loads(error_answer(ASKER, RefusedCommand(ErrorCode.NOT_FOUND, "no")))
    assert (error["type"], error["id"], error["code"]) == ("error", "q1", "not_found")
    delivery = envelopes.decode_delivery(delivery_to(ASKER, b'{"type":"pong"}'))
    (item,) = delivery.items
    assert (item.targets, item.durable, bytes(item.frame)) == (
        [envelopes.Target("carol", "c1")],
        False,
        b'{"type":"pong"}',
    )
