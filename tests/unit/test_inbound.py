"""inbound.py: what the router consumes, decoded strictly. No event loop, no network."""

import json
from typing import Any

import msgspec
import pytest

from proto import envelopes
from proto.codes import ErrorCode
from proto.envelopes import (
    ApiGroupMembers,
    ApiKick,
    ApiSend,
    ConnOpened,
    Heartbeat,
    PresenceAsked,
    RoomJoined,
    RoomLeft,
)
from proto.errors import BadEnvelope
from proto.names import (
    KEY_ACK,
    KEY_CONN_OPENED,
    KEY_PRESENCE,
    KEY_ROOM_JOINED,
    KEY_ROOM_LEFT,
    KEY_SAVED,
    KEY_SEND,
)
from router import inbound
from router.inbound import Call, Refused
from tests.unit.test_routing import NOW_MS, REPLY_TO, outgoing

# Envelopes


def test_decode_inbound_by_routing_key() -> None:
    body = envelopes.encode(outgoing())
    assert inbound.decode_inbound(KEY_SEND, body) == outgoing()
    opened = ConnOpened(uid="bob", conn_id="k1", gateway_id="gw1")
    assert inbound.decode_inbound(KEY_CONN_OPENED, envelopes.encode(opened)) == opened


@pytest.mark.parametrize(
    ("routing_key", "body"),
    [
        (KEY_SEND, b"not json"),
        (KEY_SEND, b'{"mid": "m1"}'),
        (KEY_CONN_OPENED, b'{"uid": 1, "conn_id": "k", "gateway_id": "g"}'),
        (KEY_ACK, b'{"uid": "bob", "mids": []}'),
        ("gateway.unknown", b"{}"),
    ],
)
def test_decode_inbound_rejects_bad_envelopes(routing_key: str, body: bytes) -> None:
    with pytest.raises(BadEnvelope):
        inbound.decode_inbound(routing_key, body)


def test_bad_envelope_reason_names_the_field_not_the_value() -> None:
    body = b'{"uid": 12345, "conn_id": "k", "gateway_id": "g"}'
    with pytest.raises(BadEnvelope) as caught:
        inbound.decode_inbound(KEY_CONN_OPENED, body)
    assert "$.uid" in caught.value.reason
    assert "12345" not in caught.value.reason


def test_decode_batch_keeps_order_and_drops_only_bad_items() -> None:
    opened = ConnOpened(uid="bob", conn_id="k1", gateway_id="gw1")
    body = envelopes.encode(
        envelopes.Batch(
            items=[
                envelopes.Batched(
                    KEY_CONN_OPENED, msgspec.Raw(envelopes.encode(opened))
                ),
                envelopes.Batched(KEY_SEND, msgspec.Raw(b'{"mid": "m1"}')),
                envelopes.Batched(KEY_SAVED, msgspec.Raw(b'{"uids": []}')),
                envelopes.Batched(KEY_SEND, msgspec.Raw(envelopes.encode(outgoing()))),
            ]
        )
    )
    decoded, refused = inbound.decode_gateway_batch(body)
    assert decoded == [opened, outgoing()]
    assert [item.index for item in refused] == [1, 2]
    assert "may not be batched" in refused[1].reason
    # Each refused item alone, as a batch of one, to be dead-lettered.
    (alone,) = envelopes.decode_batch(refused[1].body).items
    assert alone.key == KEY_SAVED


def test_an_item_too_deep_for_any_decoder_is_refused_alone() -> None:
    deep = b"[" * 5000 + b"]" * 5000
    body = (
        b'{"items": [["gateway.send", {"body": ' + deep + b"}], "
        b'["gateway.heartbeat", {"gateway_id": "gw1", "connections": 5}]]}'
    )
    decoded, refused = inbound.decode_gateway_batch(body)
    assert decoded == [Heartbeat(gateway_id="gw1", connections=5)]
    (item,) = refused
    assert (item.index, item.reason) == (0, "nested too deeply")


def test_a_lone_envelope_too_deep_is_a_bad_envelope() -> None:
    deep = b"[" * 5000 + b"]" * 5000
    with pytest.raises(BadEnvelope, match="deep"):
        inbound.decode_inbound(KEY_SEND, b'{"x": ' + deep + b"}")


def test_a_batch_is_a_list_of_key_and_body_pairs() -> None:
    body = (
        b'{"items": [["gateway.heartbeat", {"gateway_id": "gw1", "connections": 5}]]}'
    )
    decoded, refused = inbound.decode_gateway_batch(body)
    assert decoded == [Heartbeat(gateway_id="gw1", connections=5)]
    assert refused == []


@pytest.mark.parametrize("body", [b"not json", b'{"items": 3}', b"[]"])
def test_decode_batch_rejects_what_is_no_batch(body: bytes) -> None:
    with pytest.raises(BadEnvelope):
        inbound.decode_gateway_batch(body)


def test_an_item_that_is_no_pair_is_refused_alone() -> None:
    decoded, refused = inbound.decode_gateway_batch(b'{"items": [["k"]]}')
    assert decoded == []
    assert [item.body for item in refused] == [b'{"items":[["k"]]}']


def test_api_keys_are_commands() -> None:
    assert inbound.is_command("api.kick")
    assert inbound.is_command("api.users.kick")
    assert not inbound.is_command(KEY_SEND)


@pytest.mark.parametrize(
    "addressing",
    [
        {"to": None},
        {"to": "bob", "group": "team"},
        {"to": None, "room": "r", "broadcast": True},
    ],
)
def test_outgoing_must_be_addressed_exactly_one_way(addressing: dict[str, Any]) -> None:
    fields = {**json.loads(envelopes.encode(outgoing())), **addressing}
    with pytest.raises(BadEnvelope):
        inbound.decode_inbound(KEY_SEND, json.dumps(fields).encode())


def test_new_gateway_envelopes_decode() -> None:
    asked = PresenceAsked(
        uid="a", conn_id="k", gateway_id="g", client_id="p1", uids=["b"]
    )
    joined = RoomJoined(uid="a", conn_id="k", gateway_id="g", room="r")
    for key, envelope in [
        (KEY_PRESENCE, asked),
        (KEY_ROOM_JOINED, joined),
        (KEY_ROOM_LEFT, RoomLeft(uid="a", conn_id="k", gateway_id="g", room="r")),
        (KEY_SEND, outgoing(to=None, group="team")),
    ]:
        assert inbound.decode_inbound(key, envelopes.encode(envelope)) == envelope


# Backend commands


def test_decode_command_gives_a_call_with_a_mid_for_sends_only() -> None:
    send = inbound.decode_command(
        "api.send", b'{"to": "bob", "body": [1]}', REPLY_TO, mid="m7", ts=NOW_MS
    )
    assert isinstance(send, Call)
    assert (send.name, send.mid, send.ts, send.reply_to) == (
        "send",
        "m7",
        NOW_MS,
        REPLY_TO,
    )
    assert isinstance(send.command, ApiSend)
    assert (send.command.sender, bytes(send.command.body)) == ("system", b"[1]")
    kick = inbound.decode_command(
        "api.kick", b'{"uid": "bob"}', None, mid="m8", ts=NOW_MS
    )
    assert kick == Call("kick", ApiKick(uid="bob"), None)
    added = inbound.decode_command(
        "api.group.add", b'{"group": "g", "uids": ["a"]}', None, mid="m9", ts=NOW_MS
    )
    assert added == Call("group.add", ApiGroupMembers(group="g", uids=["a"]), None)


@pytest.mark.parametrize(
    ("routing_key", "body", "code", "path"),
    [
        ("api.send", b"{not json", ErrorCode.INVALID_JSON, None),
        ("api.send", b'{"body": 1}', ErrorCode.INVALID_FIELD, "$"),
        (
            "api.send",
            b'{"to": "a", "group": "b", "body": 1}',
            ErrorCode.INVALID_FIELD,
            "$",
        ),
        ("api.send", b'{"to": "a"}', ErrorCode.INVALID_FIELD, "body"),
        ("api.kick", b'{"uid": 7}', ErrorCode.INVALID_FIELD, "$.uid"),
        ("api.kick", b"[]", ErrorCode.INVALID_FIELD, "object"),
        (
            "api.group.add",
            b'{"group": "g", "uids": "a"}',
            ErrorCode.INVALID_FIELD,
            "$.uids",
        ),
        ("api.teleport", b"{}", ErrorCode.UNKNOWN_COMMAND, None),
    ],
)
def test_bad_commands_are_refused_with_a_code(
    routing_key: str, body: bytes, code: ErrorCode, path: str | None
) -> None:
    refused = inbound.decode_command(routing_key, body, REPLY_TO, mid="m1", ts=NOW_MS)

    assert isinstance(refused, Refused)
    assert (refused.code, refused.reply_to) == (code, REPLY_TO)
    assert refused.reason
    if path is not None:
        assert path in refused.reason


def test_a_command_larger_than_the_limit_is_refused_too_large() -> None:
    body = b'{"uids": [' + b",".join([b'"' + b"a" * 100 + b'"'] * 20) + b"]}"
    refused = inbound.decode_command(
        "api.presence", body, REPLY_TO, mid="m1", ts=NOW_MS, max_bytes=1024
    )
    accepted = inbound.decode_command(
        "api.presence", body, REPLY_TO, mid="m1", ts=NOW_MS, max_bytes=len(body)
    )

    assert isinstance(refused, Refused)
    assert (refused.code, refused.reply_to) == (ErrorCode.TOO_LARGE, REPLY_TO)
    assert not isinstance(accepted, Refused)
