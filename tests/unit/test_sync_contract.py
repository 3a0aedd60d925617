"""The contract of history and sync: its frames, envelopes, commands, codes and names decode
what they should and refuse the rest at its JSON path."""

import json
from typing import Any

import msgspec
import pytest

from proto import envelopes, frames, sync
from proto.codes import ErrorCode
from proto.names import (
    KEY_CONVERSATIONS,
    KEY_HISTORY,
    KEY_READ,
    KEY_RECEIPTS,
    KEY_SYNC,
    KEY_SYNC_MORE,
    Names,
)

MID = "018bcfe5680000000123456789"
BIG = 2**63


def client(**fields: object) -> frames.AnyClientFrame:
    return frames.decode_client_frame(json.dumps(fields))


def refused_at(path: str, decode: object, **fields: object) -> None:
    """``decode`` (a decoder of bytes) refuses ``fields`` with msgspec's error at ``path``."""
    assert callable(decode)
    with pytest.raises(msgspec.ValidationError) as caught:
        decode(json.dumps(fields).encode())
    assert str(caught.value).endswith(f"- at `{path}`"), str(caught.value)


# --- client frames -----------------------------------------------------------------------


@pytest.mark.parametrize("since", [0, 1, 41, BIG - 1])
def test_init_takes_a_since(since: int) -> None:
    assert client(type="init", token="t", since=since) == frames.Init(
        token="t", since=since
    )


def test_init_without_since_is_as_before() -> None:
    assert client(type="init", token="t") == frames.Init(token="t", since=None)
    assert client(type="init", token="t", since=None) == frames.Init(token="t")


@pytest.mark.parametrize("since", [-1, 1.5, "3", True, False, [1], {}, BIG])
def test_a_since_that_is_no_integer_from_0_is_refused_at_its_path(
    since: object,
) -> None:
    refused_at(
        "$.since", frames.decode_client_frame, type="init", token="t", since=since
    )


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"with": "bob"},
            frames.HistoryQuery(id="h1", peer="bob"),
        ),
        (
            {"group": "team", "before": 120, "limit": 20},
            frames.HistoryQuery(id="h1", group="team", before=120, limit=20),
        ),
        (
            {"with": "bob", "group": None, "limit": 100, "before": 1},
            frames.HistoryQuery(id="h1", peer="bob", limit=100, before=1),
        ),
    ],
)
def test_history_frames_decode(
    fields: dict[str, object], expected: frames.HistoryQuery
) -> None:
    frame = client(type="history", id="h1", **fields)
    assert frame == expected
    assert isinstance(frame, frames.HistoryQuery)
    assert frame.limit == expected.limit  # 50 when not given


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("$", {}),
        ("$", {"with": "bob", "group": "team"}),
        ("$", {"with": None, "group": None}),
        ("$.with", {"with": ""}),
        ("$.with", {"with": "a:b"}),
        ("$.with", {"with": 7}),
        ("$.group", {"group": "t*"}),
        ("$.limit", {"with": "bob", "limit": 0}),
        ("$.limit", {"with": "bob", "limit": 101}),
        ("$.limit", {"with": "bob", "limit": True}),
        ("$.limit", {"with": "bob", "limit": "5"}),
        ("$.limit", {"with": "bob", "limit": 5.0}),
        ("$.limit", {"with": "bob", "limit": None}),
        ("$.before", {"with": "bob", "before": 0}),
        ("$.before", {"with": "bob", "before": -3}),
        ("$.before", {"with": "bob", "before": False}),
        ("$.before", {"with": "bob", "before": BIG}),
        ("$.id", {"id": "", "with": "bob"}),
    ],
)
def test_bad_history_frames_are_refused_at_their_path(
    path: str, fields: dict[str, object]
) -> None:
    refused_at(
        path, frames.decode_client_frame, **{"type": "history", "id": "h1", **fields}
    )


def test_read_frames_decode_and_refuse_bad_mids() -> None:
    assert client(type="read", id="r1", mid=MID) == frames.Read(id="r1", mid=MID)
    for mid in ("", "a b", "x" * 65, 5, None):
        refused_at("$.mid", frames.decode_client_frame, type="read", id="r1", mid=mid)
    with pytest.raises(msgspec.ValidationError, match="missing required field `mid`"):
        client(type="read", id="r1")


def test_conversations_frames_decode() -> None:
    assert client(type="conversations", id="v1") == frames.ConversationsQuery(
        id="v1", limit=50, before=None
    )
    assert client(
        type="conversations", id="v1", limit=1, before=300
    ) == frames.ConversationsQuery(id="v1", limit=1, before=300)


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("$.limit", {"limit": 0}),
        ("$.limit", {"limit": 101}),
        ("$.limit", {"limit": True}),
        ("$.before", {"before": 0}),
        ("$.before", {"before": "1"}),
        ("$.id", {"id": 3}),
    ],
)
def test_bad_conversations_frames_are_refused_at_their_path(
    path: str, fields: dict[str, object]
) -> None:
    refused_at(
        path,
        frames.decode_client_frame,
        **{"type": "conversations", "id": "v1", **fields},
    )


def test_the_history_frames_are_client_frame_types() -> None:
    assert {"history", "read", "conversations"} <= frames.CLIENT_FRAME_TYPES


# --- server frames -----------------------------------------------------------------------

MESSAGE = (
    b'{"seq":41,"type":"message","mid":"m1","from":"alice","to":"bob","body":1,"ts":5}'
)


def test_synced_marked_and_receipt_frames() -> None:
    assert json.loads(frames.encode(frames.Synced(seq=0))) == {
        "type": "synced",
        "seq": 0,
    }
    assert json.loads(frames.encode(frames.Marked(id="r1"))) == {
        "type": "marked",
        "id": "r1",
    }
    receipt = frames.Receipt(by="bob", mid=MID)
    assert json.loads(frames.encode(receipt)) == {
        "type": "receipt",
        "by": "bob",
        "mid": MID,
    }
    assert frames.decode_server_frame(frames.encode(receipt)) == receipt


def test_a_history_page_carries_its_frames_byte_for_byte_and_always_more() -> None:
    page = frames.HistoryPage(id="h1", messages=[msgspec.Raw(MESSAGE)], more=False)
    encoded = frames.encode(page)
    assert MESSAGE in encoded
    assert json.loads(encoded) == {
        "type": "history",
        "id": "h1",
        "messages": [json.loads(MESSAGE)],
        "more": False,
    }
    decoded = frames.decode_server_frame(encoded)
    assert isinstance(decoded, frames.HistoryPage)
    assert [bytes(m) for m in decoded.messages] == [MESSAGE]


def test_conversation_items_write_read_as_null_when_unset() -> None:
    peer = frames.PeerConversation(
        peer="bob", last=msgspec.Raw(MESSAGE), unread=2, read=None
    )
    group = frames.GroupConversation(
        group="team", last=msgspec.Raw(MESSAGE), unread=0, read=MID
    )
    page = frames.ConversationsPage(
        id="v1", items=[msgspec.Raw(frames.encode(item)) for item in (peer, group)]
    )
    assert json.loads(frames.encode(page))["items"] == [
        {"with": "bob", "last": json.loads(MESSAGE), "unread": 2, "read": None},
        {"group": "team", "last": json.loads(MESSAGE), "unread": 0, "read": MID},
    ]
    decoded = frames.decode_server_frame(frames.encode(page))
    assert isinstance(decoded, frames.ConversationsPage)
    items = [frames.decode_conversation_item(item) for item in decoded.items]
    assert items == [peer, group]


def test_a_group_item_whose_message_mentions_with_decodes_as_a_group() -> None:
    last = (
        b'{"type":"message","mid":"m","from":"a","group":"g","body":{"with":1},"ts":1}'
    )
    item = b'{"group":"g","last":' + last + b',"unread":0,"read":null}'
    decoded = frames.decode_conversation_item(item)
    assert isinstance(decoded, frames.GroupConversation)
    with pytest.raises(msgspec.ValidationError):
        frames.decode_conversation_item(b'{"last":{},"unread":0,"read":null}')


# --- envelopes ---------------------------------------------------------------------------

CONNECTION: dict[str, Any] = {"uid": "alice", "gateway_id": "gw-a", "conn_id": "k1"}
ASKED: dict[str, Any] = {**CONNECTION, "client_id": "c1"}


def test_conn_opened_carries_since_and_decodes_without_it() -> None:
    opened = envelopes.ConnOpened(uid="a", conn_id="k", gateway_id="g", since=7)
    assert envelopes.decode_conn_opened(envelopes.encode(opened)).since == 7
    assert envelopes.decode_conn_opened(
        b'{"uid":"a","conn_id":"k","gateway_id":"g"}'
    ) == (envelopes.ConnOpened(uid="a", conn_id="k", gateway_id="g", since=None))
    refused_at(
        "$.since",
        envelopes.decode_conn_opened,
        uid="a",
        conn_id="k",
        gateway_id="g",
        since=-1,
    )


def test_a_delivery_says_how_far_a_sync_window_reaches() -> None:
    window = envelopes.SyncWindow(to_seq=1000, more=True, conn_id="k")
    delivery = envelopes.Delivery(items=[], sync=window)
    assert json.loads(envelopes.encode(delivery))["sync"] == {
        "to_seq": 1000,
        "more": True,
        "conn_id": "k",
    }
    assert envelopes.decode_delivery(envelopes.encode(delivery)).sync == window
    assert envelopes.decode_delivery(b'{"items":[]}').sync is None


def test_sync_requests() -> None:
    request = sync.decode_sync_request(
        json.dumps({**CONNECTION, "since": 0, "register": True}).encode()
    )
    assert request == sync.SyncRequest(**CONNECTION, since=0, limit=0, register=True)
    assert sync.decode_sync_request(sync.encode(request)) == request
    for since in (-1, True, "0", None):
        refused_at("$.since", sync.decode_sync_request, **CONNECTION, since=since)
    refused_at("$.limit", sync.decode_sync_request, **CONNECTION, since=0, limit=-1)
    refused_at(
        "$.uid", sync.decode_sync_request, **{**CONNECTION, "uid": "a:b"}, since=0
    )


def test_history_asked() -> None:
    asked = sync.HistoryAsked(**ASKED, group="team", before=9, limit=3)
    assert sync.decode_history_asked(sync.encode(asked)) == asked
    assert (
        json.loads(sync.encode(sync.HistoryAsked(**ASKED, peer="bob"))).items()
        >= {"with": "bob", "limit": 50}.items()
    )
    refused_at("$", sync.decode_history_asked, **ASKED)
    refused_at("$", sync.decode_history_asked, **ASKED, group="g", **{"with": "b"})
    refused_at("$.limit", sync.decode_history_asked, **ASKED, group="g", limit=101)
    refused_at("$.before", sync.decode_history_asked, **ASKED, group="g", before=0)
    refused_at(
        "$.client_id",
        sync.decode_history_asked,
        **{**ASKED, "client_id": ""},
        group="g",
    )


def test_conversations_and_read_asked() -> None:
    asked = sync.ConversationsAsked(**ASKED, before=4, limit=100)
    assert sync.decode_conversations_asked(sync.encode(asked)) == asked
    refused_at("$.limit", sync.decode_conversations_asked, **ASKED, limit=0)
    read = sync.ReadAsked(**ASKED, mid=MID)
    assert sync.decode_read_asked(sync.encode(read)) == read
    refused_at("$.mid", sync.decode_read_asked, **ASKED, mid="x y")


def test_receipts() -> None:
    body = {
        "items": [
            {
                "by": "bob",
                "mid": MID,
                "origin": ["bob", "gw-b", "k2"],
                "entries": [["alice", 12], ["bob", 30]],
            }
        ]
    }
    receipts = sync.decode_receipts(json.dumps(body).encode())
    (item,) = receipts.items
    assert (item.by, item.mid) == ("bob", MID)
    assert item.origin == sync.ReadingConnection("bob", "gw-b", "k2")
    assert item.entries == [
        sync.ReceiptEntry("alice", 12),
        sync.ReceiptEntry("bob", 30),
    ]
    assert json.loads(sync.encode(receipts)) == body
    body["items"][0]["entries"] = [["alice", -1]]
    refused_at("$.items[0].entries[0][1]", sync.decode_receipts, **body)
    body["items"][0]["entries"] = [["a:b", 1]]
    refused_at("$.items[0].entries[0][0]", sync.decode_receipts, **body)


# --- commands ----------------------------------------------------------------------------


def command(name: str, **fields: object) -> envelopes.Command:
    return msgspec.json.decode(json.dumps(fields), type=envelopes.COMMANDS[name])


def test_history_commands() -> None:
    assert command("history", uid="bob", **{"with": "alice"}) == sync.ApiHistory(
        uid="bob", peer="alice", limit=50
    )
    assert command("conversations", uid="bob", limit=1) == sync.ApiConversations(
        uid="bob", limit=1
    )
    assert command("message", mid=MID) == sync.ApiMessage(mid=MID, uid=None)
    assert sync.HISTORY_COMMANDS.items() <= envelopes.COMMANDS.items()


@pytest.mark.parametrize(
    ("name", "path", "fields"),
    [
        ("history", "$", {"uid": "bob"}),
        ("history", "$", {"uid": "bob", "with": "a", "group": "g"}),
        ("history", "$.limit", {"uid": "bob", "group": "g", "limit": 101}),
        ("history", "$.before", {"uid": "bob", "group": "g", "before": 0}),
        ("history", "$.uid", {"uid": "", "group": "g"}),
        ("conversations", "$.limit", {"uid": "bob", "limit": 0}),
        ("conversations", "$.before", {"uid": "bob", "before": True}),
        ("message", "$.mid", {"mid": "a b"}),
        ("message", "$.uid", {"mid": MID, "uid": "a:b"}),
    ],
)
def test_bad_history_commands_are_refused_at_their_path(
    name: str, path: str, fields: dict[str, object]
) -> None:
    with pytest.raises(msgspec.ValidationError) as caught:
        command(name, **fields)
    assert str(caught.value).endswith(f"- at `{path}`")


# --- codes and names ---------------------------------------------------------------------


def test_the_new_codes() -> None:
    assert ErrorCode.NOT_FOUND.value == "not_found"
    assert ErrorCode.HISTORY_OFF.value == "history_off"


def test_the_new_names() -> None:
    assert Names("ns").store_queries_queue == "ns.offline.queries"
    assert (KEY_SYNC, KEY_SYNC_MORE) == ("router.sync", "gateway.sync")
    assert (KEY_HISTORY, KEY_CONVERSATIONS, KEY_READ) == (
        "gateway.history",
        "gateway.conversations",
        "gateway.read",
    )
    assert KEY_RECEIPTS == "store.receipts"
