"""The rules of proto/rules.py, and every edge that applies them: frames, commands, tokens,
envelopes, and the dedup keys they make safe."""

import json
import math
import re
import string
from collections.abc import Sequence
from http import HTTPStatus

import msgspec
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway import commands
from gateway.effects import Reply
from gateway.session import Session
from gateway.tokens import verify_token
from proto import envelopes, frames, rules
from proto.codes import ErrorCode
from proto.errors import BadEnvelope, FrameRejected
from proto.mids import MidFactory
from proto.names import (
    KEY_CONN_OPENED,
    KEY_PRESENCE,
    KEY_ROOM_JOINED,
    KEY_SEND,
    Names,
)
from router import inbound
from router.inbound import Call, Refused
from tests.support.tokens import TEST_JWT_SECRET, make_token

ID_ALPHABET = string.ascii_letters + string.digits + "_-.@+=|~"
IDS = st.text(alphabet=ID_ALPHABET, min_size=1, max_size=rules.MAX_ID_LENGTH)
BAD_IDS = [
    "x\u0000y",
    "acme:bob",
    "a b",
    "room*",
    "a#b",
    "a?",
    "[a]",
    "bob\n",
    "\tbob",
    "b\u00f6b",
    "\u0430lice",  # a Cyrillic a
    "",
    "a" * (rules.MAX_ID_LENGTH + 1),
]
GOOD_IDS = [
    "alice",
    "auth0|5f7c8ec7c33c6c004bbafe82",
    "ann+test@example.com",
    "550e8400-e29b-41d4-a716-446655440000",
    "AbC_-.=~",
    "a" * rules.MAX_ID_LENGTH,
]
NOW_MS = 1_800_000_000_000
decode_identifier = msgspec.json.Decoder(rules.Identifier).decode


def is_decoded_as_identifier(value: str) -> bool:
    try:
        decode_identifier(json.dumps(value))
    except msgspec.ValidationError:
        return False
    return True


# Identifiers


@pytest.mark.parametrize("value", GOOD_IDS)
def test_usual_uids_are_identifiers(value: str) -> None:
    assert rules.is_identifier(value)
    assert is_decoded_as_identifier(value)


@pytest.mark.parametrize("value", BAD_IDS)
def test_control_characters_separators_globs_and_non_ascii_are_not(value: str) -> None:
    assert not rules.is_identifier(value)
    assert not is_decoded_as_identifier(value)


@given(st.text(max_size=rules.MAX_ID_LENGTH + 2))
@example("abc\n")
@example("abc\r\n")
def test_the_decoder_and_is_identifier_agree(value: str) -> None:
    assert is_decoded_as_identifier(value) == rules.is_identifier(value)


@given(IDS)
def test_every_identifier_is_accepted(value: str) -> None:
    assert rules.is_identifier(value)


@given(
    good=IDS,
    bad=st.characters(blacklist_characters=ID_ALPHABET, blacklist_categories=["Cs"]),
    at=st.integers(min_value=0),
)
def test_one_character_outside_the_set_makes_it_invalid(
    good: str, bad: str, at: int
) -> None:
    position = at % (len(good) + 1)
    value = (good[:position] + bad + good[position:])[: rules.MAX_ID_LENGTH]
    if bad not in value:
        value = bad + good[: rules.MAX_ID_LENGTH - 1]
    assert not rules.is_identifier(value)


def test_the_pattern_is_also_a_valid_ecma_regex_without_python_only_syntax() -> None:
    # JSON Schema validators read it as ECMA-262: no \A, \Z, (?P<...>) or possessives.
    assert not re.search(r"\\[AZz]|\(\?P|\+\+|\*\+", rules.IDENTIFIER_PATTERN)


# Identifiers at each edge


def session() -> Session:
    s = Session("conn1", "gw1", TEST_JWT_SECRET, MidFactory("abcdef0123"))
    token = make_token("alice", exp=NOW_MS // 1000 + 60)
    s.on_text(json.dumps({"type": "init", "token": token}), NOW_MS)
    assert s.is_initialized
    return s


def error_of(effects: Sequence[object]) -> dict[str, str]:
    (reply,) = effects
    assert isinstance(reply, Reply)
    error: dict[str, str] = json.loads(reply.frame)
    assert error["type"] == "error"
    return error


@pytest.mark.parametrize(
    ("frame", "path"),
    [
        ({"type": "send", "id": "c1", "to": "x\u0000y", "body": 1}, "$.to"),
        ({"type": "send", "id": "c1", "group": "a:b", "body": 1}, "$.group"),
        ({"type": "send", "id": "c:1", "to": "bob", "body": 1}, "$.id"),
        ({"type": "join", "id": "j1", "room": "live *"}, "$.room"),
        ({"type": "leave", "id": "l1", "room": "live\n"}, "$.room"),
        ({"type": "presence", "id": "p1", "uids": ["bob", "x\u0000"]}, "$.uids[1]"),
        ({"type": "ack", "mids": ["m\u0000"]}, "$.mids[0]"),
    ],
)
def test_a_frame_with_a_bad_name_is_invalid_field_with_its_path(
    frame: dict[str, object], path: str
) -> None:
    error = error_of(session().on_text(json.dumps(frame), NOW_MS))
    assert error["code"] == ErrorCode.INVALID_FIELD
    assert path in error["message"]


@pytest.mark.parametrize("sub", BAD_IDS)
def test_a_token_whose_sub_breaks_the_rule_is_an_invalid_token(sub: str) -> None:
    token = make_token(sub, exp=NOW_MS // 1000 + 60)
    with pytest.raises(FrameRejected) as rejected:
        verify_token(token, TEST_JWT_SECRET, NOW_MS / 1000)
    assert rejected.value.code is ErrorCode.INVALID_TOKEN


@pytest.mark.parametrize(
    ("command", "body", "path"),
    [
        ("send", {"to": "x\u0000y", "body": 1}, "$.to"),
        ("send", {"to": "bob", "from": "sys tem", "body": 1}, "$.from"),
        ("send", {"to": "bob", "id": "a:b", "body": 1}, "$.id"),
        ("send", {"room": "r#1", "body": 1}, "$.room"),
        ("broadcast", {"from": "", "body": 1}, "$.from"),
        ("kick", {"uid": "bob\n"}, "$.uid"),
        ("group.add", {"group": "g", "uids": ["ok", "n\u0000"]}, "$.uids[1]"),
        ("group.remove", {"group": "g*", "uids": []}, "$.group"),
        ("presence", {"uids": ["a:b"]}, "$.uids[0]"),
        ("connections", {"uid": "\u0430"}, "$.uid"),
        ("room.count", {"room": "a b"}, "$.room"),
    ],
)
def test_a_command_with_a_bad_name_is_invalid_field_over_amqp_and_http(
    command: str, body: dict[str, object], path: str
) -> None:
    raw = json.dumps(body).encode()
    refused = inbound.decode_command(f"api.{command}", raw, None, mid="m", ts=NOW_MS)
    assert isinstance(refused, Refused)
    assert refused.code is ErrorCode.INVALID_FIELD
    assert path in refused.reason
    answer = commands.check_command(command, raw)
    assert isinstance(answer, commands.HttpAnswer)
    assert (answer.status, answer.code) == (
        HTTPStatus.BAD_REQUEST,
        ErrorCode.INVALID_FIELD,
    )
    assert path in json.loads(answer.body)["error"]["message"]


def outgoing_body(**fields: object) -> bytes:
    envelope = {
        "mid": "018f0e4a2b3c0000a1b2c3d4e5",
        "sender": "alice",
        "client_id": "c1",
        "body": 1,
        "ts": NOW_MS,
        "gateway_id": "gw1",
        "conn_id": "k1",
        "to": "bob",
        **fields,
    }
    return msgspec.json.encode(envelope)


@pytest.mark.parametrize(
    ("key", "body"),
    [
        (KEY_SEND, outgoing_body(to="x\u0000y")),
        (KEY_SEND, outgoing_body(sender="a:b")),
        (KEY_SEND, outgoing_body(client_id="c\n")),
        (
            KEY_CONN_OPENED,
            b'{"uid":"x\\u0000y","conn_id":"k1","gateway_id":"gw1"}',
        ),
        (
            KEY_ROOM_JOINED,
            b'{"uid":"a","conn_id":"k","gateway_id":"g","room":"*"}',
        ),
        (
            KEY_PRESENCE,
            b'{"uid":"a","conn_id":"k","gateway_id":"g","client_id":"p","uids":["a b"]}',
        ),
    ],
)
def test_an_envelope_with_a_bad_name_is_a_bad_envelope(key: str, body: bytes) -> None:
    with pytest.raises(BadEnvelope):
        inbound.decode_inbound(key, body)


def test_a_batch_refuses_only_its_bad_items() -> None:
    good = outgoing_body()
    bad = outgoing_body(to="x\u0000y")
    long_number = outgoing_body(body=msgspec.Raw(b"1" * 10_000))
    batch = envelopes.encode(
        envelopes.Batch(
            items=[
                envelopes.Batched(KEY_SEND, msgspec.Raw(good)),
                envelopes.Batched(KEY_SEND, msgspec.Raw(bad)),
                envelopes.Batched(KEY_SEND, msgspec.Raw(long_number)),
            ]
        )
    )
    decoded, refused = inbound.decode_gateway_batch(batch)
    assert [type(e) for e in decoded] == [envelopes.Outgoing]
    assert len(refused) == 2
    assert "$.to" in refused[0].reason
    assert "$.body" in refused[1].reason


# Bodies


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**70), max_value=10**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet='[]{}"\\0123456789eE+-. a\u00e9', max_size=80)
    | st.sampled_from(["1e999", "-1E+400", "9" * 65, "0." + "1" * 70, "1e-999"]).map(
        lambda literal: RawNumber(literal)
    )
)


class RawNumber(str):
    """A number literal written as it is (json.dumps would quote it)."""


def dump(value: object) -> str:
    """JSON text of a value, with ``RawNumber`` literals unquoted."""
    if isinstance(value, RawNumber):
        return str(value)
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{" + ",".join(f"{json.dumps(k)}:{dump(v)}" for k, v in value.items()) + "}"
        )
    return json.dumps(value)


def nested(value: object, depth: int) -> object:
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


BODIES = st.builds(
    nested,
    st.recursive(
        JSON_SCALARS,
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.text(max_size=5), inner, max_size=4)
        ),
        max_leaves=12,
    ),
    st.integers(min_value=0, max_value=75),
)


def reference_violation(text: str) -> bool:
    """The rules, read with Python's json: depth, literal length, finite value."""
    literals: list[str] = []

    def keep(literal: str) -> int:
        literals.append(literal)
        return 0

    value = json.loads(text, parse_int=keep, parse_float=keep)

    def depth(node: object) -> int:
        if isinstance(node, list):
            return 1 + max((depth(v) for v in node), default=0)
        if isinstance(node, dict):
            return 1 + max((depth(v) for v in node.values()), default=0)
        return 0

    return (
        depth(value) > rules.MAX_BODY_DEPTH
        or any(len(n) > rules.MAX_NUMBER_CHARS for n in literals)
        or any(math.isinf(float(n)) for n in literals)
    )


@given(BODIES)
def test_body_violation_agrees_with_a_reading_by_pythons_json(body: object) -> None:
    text = dump(body)
    assert (rules.body_violation(text.encode()) is not None) == reference_violation(
        text
    )


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"1" * 10_000, "longer than"),
        (b"[" * 996 + b"]" * 996, "nested"),
        (b'{"a":' * 65 + b"1" + b"}" * 65, "nested"),
        (b"[1,2,1e400]", "finite"),
    ],
)
def test_the_reported_bodies_are_refused(body: bytes, reason: str) -> None:
    violation = rules.body_violation(body)
    assert violation is not None
    assert reason in violation


@pytest.mark.parametrize(
    "body",
    [
        b'{"text":"hi"}',
        b"[" * 64 + b"]" * 64,
        b'"' + b"[" * 1000 + b"9" * 1000 + b'1e999"',
        b"1e-999",
        b"-" + b"9" * 63,
    ],
)
def test_bodies_within_the_rules_pass(body: bytes) -> None:
    assert rules.body_violation(body) is None


@pytest.mark.parametrize(
    "body", [b"1" * 10_000, b"[" * 996 + b"]" * 996, b'{"n":-1E+999}']
)
def test_a_body_is_refused_for_clients_and_backends_alike(body: bytes) -> None:
    frame = b'{"type":"send","id":"c1","to":"bob","body":' + body + b"}"
    error = error_of(session().on_text(frame, NOW_MS))
    # A frame far too deep is refused before it decodes: it has no id then.
    assert error["code"] == ErrorCode.INVALID_FIELD
    assert error.get("id") in ("c1", None)
    assert "$.body" in error["message"]
    command = b'{"to":"bob","body":' + body + b"}"
    refused = inbound.decode_command("api.send", command, None, mid="m", ts=NOW_MS)
    assert isinstance(refused, Refused)
    assert refused.code is ErrorCode.INVALID_FIELD
    assert "$.body" in refused.reason
    broadcast = b'{"body":' + body + b"}"
    refused = inbound.decode_command(
        "api.broadcast", broadcast, None, mid="m", ts=NOW_MS
    )
    assert isinstance(refused, Refused)
    assert refused.code is ErrorCode.INVALID_FIELD
    answer = commands.check_command("send", command)
    assert isinstance(answer, commands.HttpAnswer)
    assert answer.code == ErrorCode.INVALID_FIELD


def test_a_valid_command_still_decodes() -> None:
    call = inbound.decode_command(
        "api.send",
        b'{"to":"auth0|abc","from":"billing","id":"i1","body":{"n":[1,2.5]}}',
        None,
        mid="m",
        ts=NOW_MS,
    )
    assert isinstance(call, Call)


# Dedup keys


def test_the_reported_dedup_collision_cannot_happen() -> None:
    names = Names("ns")
    # uid "acme" + id "bob:c1" against uid "acme:bob" + id "c1": the second uid is
    # refused at every edge, and the id is a hash field, never part of the key.
    assert not rules.is_identifier("acme:bob")
    first = (names.dedup_key("acme", 7), "bob:c1")
    assert first != (names.dedup_key("acme:bob", 7), "c1")
    # Backends have a keyspace of their own: a user whose sub is "system" meets none.
    assert names.dedup_key("system", 7) != names.api_dedup_key("system", 7)
    assert not names.api_dedup_key("system", 7).startswith(
        names.dedup_key("", 7).removesuffix(":7")
    )


@given(
    uid_a=IDS, uid_b=IDS, window_a=st.integers(0, 10**9), window_b=st.integers(0, 10**9)
)
def test_dedup_keys_of_two_uids_or_windows_never_meet(
    uid_a: str, uid_b: str, window_a: int, window_b: int
) -> None:
    names = Names("ns")
    if (uid_a, window_a) != (uid_b, window_b):
        assert names.dedup_key(uid_a, window_a) != names.dedup_key(uid_b, window_b)
    assert names.dedup_key(uid_a, window_a) != names.api_dedup_key(uid_b, window_b)


def test_frames_module_reexports_the_identifier_limit() -> None:
    assert frames.MAX_ID_LENGTH == rules.MAX_ID_LENGTH
