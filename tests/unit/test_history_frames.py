"""The gateway's answer to the history frames and to ``init``'s ``since``, with history off
(``history_off``; ``since`` ignored) and on (published to the offline stores)."""

import json
from typing import Any

import pytest

from gateway.effects import Publish, Reply
from gateway.session import Session
from proto import envelopes, sync
from proto.codes import ErrorCode
from proto.mids import MidFactory
from proto.names import KEY_CONN_OPENED, KEY_CONVERSATIONS, KEY_HISTORY, KEY_READ
from router import inbound
from tests.support.tokens import TEST_JWT_SECRET, make_token

NOW_MS = 1_800_000_000_000
MID = "018bcfe5680000000123456789"
FRAMES = [
    {"type": "history", "id": "h1", "with": "bob"},
    {"type": "history", "id": "h1", "group": "team", "before": 9, "limit": 100},
    {"type": "read", "id": "h1", "mid": MID},
    {"type": "conversations", "id": "h1"},
    {"type": "conversations", "id": "h1", "before": 1, "limit": 1},
]


def session(is_history_on: bool) -> Session:
    return Session(
        "conn1",
        "gw1",
        TEST_JWT_SECRET,
        MidFactory("00000000aa"),
        is_history_on=is_history_on,
    )


def init(session: Session, **fields: object) -> Publish:
    token = make_token("alice", TEST_JWT_SECRET, 0.0, "HS256", exp=NOW_MS // 1000 + 60)
    (effect,) = session.on_text(
        json.dumps({"type": "init", "token": token, **fields}), NOW_MS
    )
    assert isinstance(effect, Publish)
    assert effect.routing_key == KEY_CONN_OPENED
    return effect


def error_of(effects: list) -> dict:
    (effect,) = effects
    assert isinstance(effect, Reply)
    assert effect.error_code is not None
    frame: dict = json.loads(effect.frame)
    assert frame["type"] == "error"
    assert frame["code"] == effect.error_code
    return frame


@pytest.mark.parametrize("frame", FRAMES)
def test_history_off_answers_history_off_with_the_id(frame: dict) -> None:
    off = session(is_history_on=False)
    init(off)
    error = error_of(off.on_text(json.dumps(frame), NOW_MS))
    assert (error["code"], error["id"]) == (ErrorCode.HISTORY_OFF, "h1")
    assert off.last_frame_type == frame["type"]
    assert off.last_frame_cost == 1.0


@pytest.mark.parametrize("is_history_on", [False, True])
@pytest.mark.parametrize(
    ("frame", "path"),
    [
        ({"type": "history", "id": "h1"}, "`$`"),
        ({"type": "history", "id": "h1", "with": "a", "group": "g"}, "`$`"),
        ({"type": "history", "id": "h1", "with": "a", "limit": 0}, "`$.limit`"),
        ({"type": "conversations", "id": "h1", "before": 0}, "`$.before`"),
        ({"type": "read", "id": "h1", "mid": "a b"}, "`$.mid`"),
    ],
)
def test_bad_history_frames_are_invalid_field_either_way(
    is_history_on: bool, frame: dict, path: str
) -> None:
    either = session(is_history_on)
    init(either)
    error = error_of(either.on_text(json.dumps(frame), NOW_MS))
    assert (error["code"], error["id"]) == (ErrorCode.INVALID_FIELD, "h1")
    assert error["message"].endswith(path)


@pytest.mark.parametrize("is_history_on", [False, True])
def test_history_frames_need_init_first(is_history_on: bool) -> None:
    error = error_of(session(is_history_on).on_text(json.dumps(FRAMES[0]), NOW_MS))
    assert error["code"] == ErrorCode.NOT_INITIALIZED


def test_a_bad_since_is_refused_before_the_token_is_read() -> None:
    error = error_of(session(True).on_text('{"type":"init","token":"x","since":-1}', 0))
    assert error["code"] == ErrorCode.INVALID_FIELD
    assert error["message"].endswith("`$.since`")


@pytest.mark.parametrize(("is_history_on", "expected"), [(False, None), (True, 41)])
def test_since_reaches_the_router_only_with_history_on(
    is_history_on: bool, expected: int | None
) -> None:
    opened = envelopes.decode_conn_opened(init(session(is_history_on), since=41).body)
    assert opened.since == expected
    assert envelopes.decode_conn_opened(init(session(is_history_on)).body).since is None


def test_history_on_publishes_each_frame_to_the_offline_stores() -> None:
    on = session(is_history_on=True)
    init(on)
    bodies: dict[str, list[bytes]] = {}
    for frame in FRAMES:
        (effect,) = on.on_text(json.dumps(frame), NOW_MS)
        assert isinstance(effect, Publish)
        assert (effect.client_id, effect.answer) == ("h1", None)
        bodies.setdefault(effect.routing_key, []).append(effect.body)
    assert bodies.keys() == {KEY_HISTORY, KEY_READ, KEY_CONVERSATIONS}
    asked: dict[str, Any] = {
        "uid": "alice",
        "gateway_id": "gw1",
        "conn_id": "conn1",
        "client_id": "h1",
    }
    assert [sync.decode_history_asked(body) for body in bodies[KEY_HISTORY]] == [
        sync.HistoryAsked(**asked, peer="bob"),
        sync.HistoryAsked(**asked, group="team", before=9, limit=100),
    ]
    assert [sync.decode_read_asked(body) for body in bodies[KEY_READ]] == [
        sync.ReadAsked(**asked, mid=MID)
    ]
    assert [
        sync.decode_conversations_asked(body) for body in bodies[KEY_CONVERSATIONS]
    ] == [
        sync.ConversationsAsked(**asked),
        sync.ConversationsAsked(**asked, before=1, limit=1),
    ]


# --- the history commands at the router ----------------------------------------------------

REPLY_TO = inbound.ReplyTo("replies", "c-1")


def decode(name: str, body: dict, is_history_on: bool) -> object:
    return inbound.decode_command(
        f"api.{name}",
        json.dumps(body).encode(),
        REPLY_TO,
        mid="m",
        ts=1,
        is_history_on=is_history_on,
    )


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("history", {"uid": "bob", "with": "alice"}),
        ("conversations", {"uid": "bob"}),
        ("message", {"mid": MID}),
    ],
)
def test_the_router_answers_history_commands_history_off(name: str, body: dict) -> None:
    assert decode(name, body, is_history_on=False) == inbound.Refused(
        ErrorCode.HISTORY_OFF,
        "this deployment keeps no history (SWITCHBOARD_HISTORY=off)",
        REPLY_TO,
    )
    assert decode(name, body, is_history_on=True) == inbound.ServedByStore(name)


def test_a_bad_history_command_is_invalid_field_either_way() -> None:
    for is_history_on in (False, True):
        refused = decode("history", {"uid": "bob"}, is_history_on)
        assert isinstance(refused, inbound.Refused)
        assert refused.code is ErrorCode.INVALID_FIELD
    assert isinstance(decode("kick", {"uid": "bob"}, False), inbound.Call)
