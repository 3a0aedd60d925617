"""The gateway's per-connection protocol logic, without sockets or a broker."""

import base64
import json

import pytest

from gateway.session import Acknowledge, Close, Effect, Publish, Reply, Session
from proto import envelopes, names
from proto.codes import CloseCode, ErrorCode
from proto.mids import MidFactory
from tests.support.tokens import TEST_JWT_SECRET, make_token

NOW_MS = 1_800_000_000_000


def new_session() -> Session:
    return Session("conn1", "gw1", TEST_JWT_SECRET, MidFactory("00000000aa"))


def token(uid: str = "alice", **claims: object) -> str:
    """A token valid at ``NOW_MS`` unless ``claims`` say otherwise."""
    claims = {"exp": NOW_MS // 1000 + 60, **claims}
    return make_token(uid, TEST_JWT_SECRET, 0.0, "HS256", **claims)


def published(effects: list[Effect]) -> Publish:
    (effect,) = effects
    assert isinstance(effect, Publish)
    return effect


def initialized() -> Session:
    session = new_session()
    session.on_text(json.dumps({"type": "init", "token": token()}), NOW_MS)
    return session


def reply_of(effects: list) -> dict:
    (effect,) = effects
    assert isinstance(effect, Reply)
    return json.loads(effect.frame)


def test_init_publishes_the_verified_uid() -> None:
    session = new_session()
    (effect,) = session.on_text(
        json.dumps({"type": "init", "token": token("bob")}), NOW_MS
    )
    assert isinstance(effect, Publish)
    assert effect.routing_key == names.KEY_CONN_OPENED
    opened = envelopes.decode_conn_opened(effect.body)
    assert (opened.uid, opened.conn_id, opened.gateway_id) == ("bob", "conn1", "gw1")
    assert session.uid == "bob"


@pytest.mark.parametrize(
    ("token_text", "code", "close_code"),
    [
        (
            token(exp=NOW_MS // 1000 - 1),
            ErrorCode.TOKEN_EXPIRED,
            CloseCode.TOKEN_EXPIRED,
        ),
        (
            token(nbf=NOW_MS // 1000 + 60),
            ErrorCode.TOKEN_EXPIRED,
            CloseCode.TOKEN_EXPIRED,
        ),
        (
            make_token("alice", secret="x" * 40),
            ErrorCode.INVALID_TOKEN,
            CloseCode.INVALID_TOKEN,
        ),
        (make_token(None), ErrorCode.INVALID_TOKEN, CloseCode.INVALID_TOKEN),
        ("not.a.jwt", ErrorCode.INVALID_TOKEN, CloseCode.INVALID_TOKEN),
    ],
    ids=["expired", "not-yet-valid", "wrong-secret", "no-sub", "garbage"],
)
def test_bad_tokens_get_an_error_and_a_close(
    token_text: str, code: ErrorCode, close_code: CloseCode
) -> None:
    session = new_session()
    reply, close = session.on_text(
        json.dumps({"type": "init", "token": token_text}), NOW_MS
    )
    assert isinstance(reply, Reply)
    assert json.loads(reply.frame)["code"] == code
    assert close == Close(close_code, code.value)
    assert not session.is_initialized


def _part(value: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def test_unsigned_and_other_algorithm_tokens_are_refused() -> None:
    claims = {"sub": "mallory", "exp": NOW_MS // 1000 + 60}
    unsigned = f"{_part({'alg': 'none', 'typ': 'JWT'})}.{_part(claims)}."
    hs512 = make_token(
        "mallory", algorithm="HS512", secret=TEST_JWT_SECRET * 2, exp=claims["exp"]
    )
    for bad in (unsigned, hs512):
        session = new_session()
        effects = session.on_text(json.dumps({"type": "init", "token": bad}), NOW_MS)
        assert reply_of(effects[:1])["code"] == ErrorCode.INVALID_TOKEN
        assert session.uid is None


def test_send_before_init_is_refused_with_its_id() -> None:
    frame = reply_of(
        new_session().on_text('{"type":"send","id":"c1","to":"bob","body":1}', NOW_MS)
    )
    assert frame == {
        "type": "error",
        "id": "c1",
        "code": "not_initialized",
        "message": frame["message"],
    }


def test_second_init_is_refused() -> None:
    session = initialized()
    frame = reply_of(
        session.on_text(json.dumps({"type": "init", "token": token("eve")}), NOW_MS)
    )
    assert frame["code"] == ErrorCode.ALREADY_INITIALIZED
    assert session.uid == "alice"


def test_send_takes_the_sender_from_the_token_and_passes_the_body_through() -> None:
    session = initialized()
    text = '{"type":"send","id":"c1","to":"bob","from":"mallory","body":{"b": [1, 2.50, "x"]}}'
    (publish,) = session.on_text(text, NOW_MS)
    assert isinstance(publish, Publish)
    outgoing = envelopes.decode_outgoing(publish.body)
    assert outgoing.sender == "alice"
    assert (outgoing.to, outgoing.client_id, outgoing.ts) == ("bob", "c1", NOW_MS)
    assert bytes(outgoing.body) == b'{"b": [1, 2.50, "x"]}'
    assert publish.mid == outgoing.mid
    sent = reply_of(session.on_confirmed(publish))
    assert sent == {"type": "sent", "id": "c1", "mid": outgoing.mid}


def test_mids_of_one_connection_increase() -> None:
    session = initialized()
    frames = [f'{{"type":"send","id":"c{i}","to":"bob","body":0}}' for i in range(5)]
    mids = [published(session.on_text(frame, NOW_MS)).mid for frame in frames]
    assert mids == sorted(mids)
    assert len(set(mids)) == 5


def test_failed_publish_answers_unavailable_with_the_id() -> None:
    session = initialized()
    publish = published(
        session.on_text('{"type":"send","id":"c1","to":"bob","body":0}', NOW_MS)
    )
    frame = reply_of(session.on_publish_failed(publish))
    assert (frame["code"], frame["id"]) == (ErrorCode.UNAVAILABLE, "c1")


def test_failed_registration_lets_the_client_init_again() -> None:
    session = new_session()
    publish = published(
        session.on_text(json.dumps({"type": "init", "token": token()}), NOW_MS)
    )
    session.on_publish_failed(publish)
    assert not session.is_initialized


@pytest.mark.parametrize(
    ("text", "code", "client_id"),
    [
        ("{not json", ErrorCode.INVALID_JSON, None),
        ("[1,2]", ErrorCode.UNKNOWN_TYPE, None),
        ('{"id":"c1"}', ErrorCode.UNKNOWN_TYPE, "c1"),
        ('{"type":"dance","id":"c1"}', ErrorCode.UNKNOWN_TYPE, "c1"),
        ('{"type":"send","id":"c1","to":"bob"}', ErrorCode.INVALID_FIELD, "c1"),
        ('{"type":"send","id":"c1","to":7,"body":1}', ErrorCode.INVALID_FIELD, "c1"),
        ('{"type":"send","id":5,"to":"bob","body":1}', ErrorCode.INVALID_FIELD, None),
        ('{"type":"send","id":"","to":"bob","body":1}', ErrorCode.INVALID_FIELD, ""),
        ('{"type":"ack","mids":"m1"}', ErrorCode.INVALID_FIELD, None),
    ],
)
def test_bad_frames_get_their_error_code(
    text: str, code: ErrorCode, client_id: str | None
) -> None:
    frame = reply_of(initialized().on_text(text, NOW_MS))
    assert frame["code"] == code
    assert frame.get("id") == client_id


def test_invalid_field_names_the_field() -> None:
    frame = reply_of(
        initialized().on_text('{"type":"send","id":"c1","to":7,"body":1}', NOW_MS)
    )
    assert "$.to" in frame["message"]


def test_binary_frames_are_refused() -> None:
    assert reply_of(initialized().on_binary())["code"] == ErrorCode.UNSUPPORTED_FRAME


def test_ping_works_before_init_and_echoes_the_id() -> None:
    assert reply_of(new_session().on_text('{"type":"ping"}', NOW_MS)) == {
        "type": "pong"
    }
    assert reply_of(new_session().on_text('{"type":"ping","id":"p"}', NOW_MS)) == {
        "type": "pong",
        "id": "p",
    }


def test_ack_becomes_an_acknowledge_effect() -> None:
    session = initialized()
    assert session.on_text('{"type":"ack","mids":["m1","m2"]}', NOW_MS) == [
        Acknowledge(("m1", "m2"))
    ]
    assert session.on_text('{"type":"ack","mids":[]}', NOW_MS) == []
    acked = envelopes.decode_acked(session.acked_envelope(["m2"]).body)
    assert (acked.uid, acked.mids) == ("alice", ["m2"])


def test_closed_envelope_only_after_init() -> None:
    assert new_session().closed_envelope() is None
    closed = initialized().closed_envelope()
    assert closed is not None
    assert closed.routing_key == names.KEY_CONN_CLOSED
