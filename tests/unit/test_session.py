"""The gateway's per-connection protocol logic, without sockets or a broker."""

import base64
import json

import pytest

from gateway.effects import (
    Acknowledge,
    Close,
    Effect,
    JoinRoom,
    LeaveRoom,
    Publish,
    Reply,
)
from gateway.session import Session
from proto import envelopes
from proto.codes import CloseCode, ErrorCode
from proto.mids import MidFactory
from proto.names import (
    KEY_CONN_CLOSED,
    KEY_CONN_OPENED,
    KEY_PRESENCE,
    KEY_ROOM_JOINED,
    KEY_ROOM_LEFT,
)
from tests.support.tokens import TEST_JWT_SECRET, make_token

NOW_MS = 1_800_000_000_000


def new_session() -> Session:
    return Session("conn1", "gw1", TEST_JWT_SECRET, MidFactory("00000000aa"))


def token(uid: str = "alice", /, **claims: object) -> str:
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
    assert effect.routing_key == KEY_CONN_OPENED
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
    # The router answers sent: only it knows whether the id was used before.
    assert session.on_confirmed(publish) == []


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
    assert closed.routing_key == KEY_CONN_CLOSED


# Addressing, rooms, broadcast, presence


def session_with(
    public_room_prefix: str = "", max_rooms: int = 100, **claims: object
) -> Session:
    session = Session(
        "conn1",
        "gw1",
        TEST_JWT_SECRET,
        MidFactory("00000000aa"),
        public_room_prefix=public_room_prefix,
        max_rooms=max_rooms,
    )
    session.on_text(json.dumps({"type": "init", "token": token(**claims)}), NOW_MS)
    return session


def send_text(**fields: object) -> str:
    return json.dumps({"type": "send", "id": "c1", "body": 0, **fields})


def join(session: Session, room: str, client_id: str = "j1") -> list[Effect]:
    """Join and let the broker confirm; returns every effect along the way."""
    effects = session.on_text(
        json.dumps({"type": "join", "id": client_id, "room": room}), NOW_MS
    )
    confirmed = [e for e in effects if isinstance(e, Publish)]
    for publish in confirmed:
        effects = effects + session.on_confirmed(publish)
    return effects


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"to": "bob", "group": "team"},
        {"to": "bob", "broadcast": True},
        {"group": "team", "room": "live-1"},
        {"broadcast": False},
    ],
    ids=[
        "none",
        "to-and-group",
        "to-and-broadcast",
        "group-and-room",
        "broadcast-false",
    ],
)
def test_send_needs_exactly_one_address(fields: dict[str, object]) -> None:
    session = session_with(rooms=["live-*"], broadcast=True)
    join(session, "live-1")
    frame = reply_of(session.on_text(send_text(**fields), NOW_MS))
    assert (frame["code"], frame["id"]) == (ErrorCode.INVALID_FIELD, "c1")


def test_group_send_is_published_and_answered_by_the_router() -> None:
    session = initialized()
    publish = published(session.on_text(send_text(group="team"), NOW_MS))
    outgoing = envelopes.decode_outgoing(publish.body)
    assert (outgoing.group, outgoing.to, outgoing.room, outgoing.broadcast) == (
        "team",
        None,
        None,
        False,
    )
    assert session.on_confirmed(publish) == []
    # A publish that fails is still answered here: the router never saw it.
    frame = reply_of(session.on_publish_failed(publish))
    assert (frame["code"], frame["id"]) == (ErrorCode.UNAVAILABLE, "c1")


def test_room_send_needs_the_connection_in_the_room() -> None:
    session = session_with(rooms=["live-*"])
    frame = reply_of(session.on_text(send_text(room="live-1"), NOW_MS))
    assert (frame["code"], frame["id"]) == (ErrorCode.NOT_MEMBER, "c1")

    join(session, "live-1")
    publish = published(session.on_text(send_text(room="live-1"), NOW_MS))
    outgoing = envelopes.decode_outgoing(publish.body)
    assert (outgoing.room, outgoing.to, outgoing.sender) == ("live-1", None, "alice")
    assert session.on_confirmed(publish) == []


def test_broadcast_needs_the_claim() -> None:
    frame = reply_of(initialized().on_text(send_text(broadcast=True), NOW_MS))
    assert (frame["code"], frame["id"]) == (ErrorCode.FORBIDDEN, "c1")

    session = session_with(broadcast=True)
    publish = published(session.on_text(send_text(broadcast=True), NOW_MS))
    outgoing = envelopes.decode_outgoing(publish.body)
    assert (outgoing.broadcast, outgoing.to) == (True, None)
    assert session.on_confirmed(publish) == []


def test_join_allowed_by_the_claim_is_answered_once_confirmed() -> None:
    session = session_with(rooms=["live-*"])
    publish = published(
        session.on_text('{"type":"join","id":"j1","room":"live-1"}', NOW_MS)
    )
    assert publish.routing_key == KEY_ROOM_JOINED
    joined = envelopes.decode_room_joined(publish.body)
    assert (joined.uid, joined.conn_id, joined.gateway_id, joined.room) == (
        "alice",
        "conn1",
        "gw1",
        "live-1",
    )
    assert session.rooms == set()  # not before the broker holds it
    join_room, reply = session.on_confirmed(publish)
    assert join_room == JoinRoom("live-1")
    assert reply_of([reply]) == {"type": "joined", "id": "j1", "room": "live-1"}
    assert session.rooms == {"live-1"}


def test_join_refused_without_a_matching_pattern() -> None:
    session = session_with(rooms=["live-*"])
    frame = reply_of(
        session.on_text('{"type":"join","id":"j1","room":"vip-1"}', NOW_MS)
    )
    assert (frame["code"], frame["id"]) == (ErrorCode.FORBIDDEN, "j1")
    frame = reply_of(
        initialized().on_text('{"type":"join","id":"j2","room":"live-1"}', NOW_MS)
    )
    assert (frame["code"], frame["id"]) == (ErrorCode.FORBIDDEN, "j2")


def test_public_rooms_need_no_claim_and_no_prefix_means_none() -> None:
    session = session_with(public_room_prefix="pub-")
    effects = join(session, "pub-lobby")
    assert isinstance(effects[0], Publish)
    assert session.rooms == {"pub-lobby"}
    frame = reply_of(
        session.on_text('{"type":"join","id":"j2","room":"lobby"}', NOW_MS)
    )
    assert frame["code"] == ErrorCode.FORBIDDEN


def test_joining_twice_publishes_once_and_answers_twice() -> None:
    session = session_with(rooms=["live-*"])
    join(session, "live-1")
    (reply,) = session.on_text('{"type":"join","id":"j2","room":"live-1"}', NOW_MS)
    assert reply_of([reply]) == {"type": "joined", "id": "j2", "room": "live-1"}


def test_rooms_per_connection_are_capped() -> None:
    session = session_with(max_rooms=2, rooms=["*"])
    join(session, "a")
    join(session, "b")
    frame = reply_of(session.on_text('{"type":"join","id":"j3","room":"c"}', NOW_MS))
    assert (frame["code"], frame["id"]) == (ErrorCode.FORBIDDEN, "j3")
    # A room already joined is still answered, and a leave makes room for another.
    assert reply_of(join(session, "a"))["type"] == "joined"
    leave(session, "a")
    assert isinstance(join(session, "c")[0], Publish)
    assert session.rooms == {"b", "c"}


def test_failed_join_records_nothing() -> None:
    session = session_with(rooms=["live-*"])
    publish = published(
        session.on_text('{"type":"join","id":"j1","room":"live-1"}', NOW_MS)
    )
    frame = reply_of(session.on_publish_failed(publish))
    assert (frame["code"], frame["id"]) == (ErrorCode.UNAVAILABLE, "j1")
    assert session.rooms == set()


def leave(session: Session, room: str, client_id: str = "l1") -> list[Effect]:
    effects = session.on_text(
        json.dumps({"type": "leave", "id": client_id, "room": room}), NOW_MS
    )
    for publish in [e for e in effects if isinstance(e, Publish)]:
        effects = effects + session.on_confirmed(publish)
    return effects


def test_leave_publishes_for_a_joined_room_and_answers_in_any_case() -> None:
    session = session_with(rooms=["live-*"])
    join(session, "live-1")
    publish = published(
        session.on_text('{"type":"leave","id":"l1","room":"live-1"}', NOW_MS)
    )
    assert publish.routing_key == KEY_ROOM_LEFT
    left = envelopes.decode_room_left(publish.body)
    assert (left.uid, left.conn_id, left.gateway_id, left.room) == (
        "alice",
        "conn1",
        "gw1",
        "live-1",
    )
    leave_room, reply = session.on_confirmed(publish)
    assert leave_room == LeaveRoom("live-1")
    assert reply_of([reply]) == {"type": "left", "id": "l1", "room": "live-1"}
    assert session.rooms == set()

    # Idempotent: a room not joined (any more, or ever) is answered at once.
    for room in ("live-1", "never"):
        (reply,) = session.on_text(
            json.dumps({"type": "leave", "id": "l2", "room": room}), NOW_MS
        )
        assert reply_of([reply]) == {"type": "left", "id": "l2", "room": room}


def test_presence_is_published_and_answered_by_the_router() -> None:
    session = initialized()
    publish = published(
        session.on_text('{"type":"presence","id":"p1","uids":["bob","carol"]}', NOW_MS)
    )
    assert publish.routing_key == KEY_PRESENCE
    asked = envelopes.decode_presence_asked(publish.body)
    assert (asked.uid, asked.conn_id, asked.gateway_id, asked.client_id) == (
        "alice",
        "conn1",
        "gw1",
        "p1",
    )
    assert asked.uids == ["bob", "carol"]
    assert session.on_confirmed(publish) == []
    frame = reply_of(session.on_publish_failed(publish))
    assert (frame["code"], frame["id"]) == (ErrorCode.UNAVAILABLE, "p1")


@pytest.mark.parametrize(
    "text",
    [
        '{"type":"join","id":"j1","room":"live-1"}',
        '{"type":"leave","id":"j1","room":"live-1"}',
        '{"type":"presence","id":"j1","uids":["bob"]}',
    ],
)
def test_room_and_presence_frames_need_init(text: str) -> None:
    frame = reply_of(new_session().on_text(text, NOW_MS))
    assert (frame["code"], frame["id"]) == (ErrorCode.NOT_INITIALIZED, "j1")


def test_closed_envelope_carries_the_rooms() -> None:
    session = session_with(rooms=["*"])
    for room in ("live-2", "live-1", "gone"):
        join(session, room)
    leave(session, "gone")
    closed = session.closed_envelope()
    assert closed is not None
    conn_closed = envelopes.decode_conn_closed(closed.body)
    assert (conn_closed.uid, conn_closed.conn_id, conn_closed.rooms) == (
        "alice",
        "conn1",
        ["live-1", "live-2"],
    )


def test_a_configured_algorithm_is_the_only_one_accepted() -> None:
    long_secret = TEST_JWT_SECRET * 2  # HS512 wants 64 bytes
    hs512 = make_token("alice", long_secret, exp=NOW_MS // 1000 + 60, algorithm="HS512")
    hs256 = make_token("alice", long_secret, exp=NOW_MS // 1000 + 60)
    session = Session(
        "conn1", "gw1", long_secret, MidFactory("00000000aa"), jwt_algorithm="HS512"
    )
    refused = Session(
        "conn2", "gw1", long_secret, MidFactory("00000000aa"), jwt_algorithm="HS512"
    )
    session.on_text(json.dumps({"type": "init", "token": hs512}), NOW_MS)
    effects = refused.on_text(json.dumps({"type": "init", "token": hs256}), NOW_MS)
    assert session.uid == "alice"
    assert reply_of(effects[:1])["code"] == ErrorCode.INVALID_TOKEN
    assert refused.uid is None


def test_a_rate_limited_frame_gets_rate_limited_with_its_id() -> None:
    session = initialized()
    effects = session.on_rate_limited('{"type":"send","id":"c7"}', is_flooding=False)
    assert reply_of(effects) == {
        "type": "error",
        "code": ErrorCode.RATE_LIMITED,
        "message": reply_of(effects)["message"],
        "id": "c7",
    }


def test_a_flood_is_answered_and_closed_with_rate_limited() -> None:
    effects = new_session().on_rate_limited(b"\x00not json", is_flooding=True)
    assert reply_of(effects[:1])["code"] == ErrorCode.RATE_LIMITED
    assert effects[1:] == [Close(CloseCode.RATE_LIMITED, ErrorCode.RATE_LIMITED.value)]


@pytest.mark.parametrize("depth", [65, 1_000, 30_000])
def test_deeply_nested_bodies_are_refused(depth: int) -> None:
    session = initialized()
    body = "[" * depth + "]" * depth
    effects = session.on_text(
        f'{{"type":"send","id":"c1","to":"bob","body":{body}}}', NOW_MS
    )
    error = reply_of(effects)
    assert error["code"] in (ErrorCode.INVALID_FIELD, ErrorCode.INVALID_JSON)
    assert error.get("id") in ("c1", None)


def test_a_body_64_levels_deep_with_brackets_in_strings_is_accepted() -> None:
    session = initialized()
    body = "[" * 64 + '"]]]]' + "[" * 100 + '"' + "]" * 64
    effects = session.on_text(
        f'{{"type":"send","id":"c1","to":"bob","body":{body}}}', NOW_MS
    )
    assert isinstance(published(effects), Publish)


@pytest.mark.parametrize(
    "number", ["1e999999", "-1E+400", "9" * 65, "-" + "9" * 400 + ".5", "1" * 10_000]
)
def test_numbers_standard_decoders_refuse_are_invalid_field(number: str) -> None:
    session = initialized()
    effects = session.on_text(
        f'{{"type":"send","id":"c1","to":"bob","body":[1,{{"n":{number}}}]}}', NOW_MS
    )
    (reply,) = effects
    assert isinstance(reply, Reply)
    error = json.loads(reply.frame)
    assert (error["code"], error["id"]) == (ErrorCode.INVALID_FIELD, "c1")
    assert "$.body" in error["message"]


@pytest.mark.parametrize(
    "number", ["9" * 64, "-" + "9" * 61 + ".5", "1.7976931348623157e308", "1e-999999"]
)
def test_numbers_within_the_rule_pass_through_byte_for_byte(number: str) -> None:
    session = initialized()
    effects = session.on_text(
        f'{{"type":"send","id":"c1","to":"bob","body":{number}}}', NOW_MS
    )
    outgoing = envelopes.decode_outgoing(published(effects).body)
    assert bytes(outgoing.body) == number.encode()
