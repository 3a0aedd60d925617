"""Transient sends: the frame's flag, the routing decision and the gateway's fanout, without
a socket, a broker or a database.

A transient message goes to the connections online now only: its delivery items are not
durable, none goes to the offline store, and a gateway pushes it without holding it for an ack.
"""

import json

import msgspec
import pytest

from gateway.effects import Publish, Reply
from gateway.fanout import Push, plan_delivery
from gateway.session import Session
from proto import envelopes, frames
from proto.codes import ErrorCode
from proto.envelopes import ApiSend, Delivery, Target
from proto.mids import MidFactory
from router import routing
from router.answers import Answer, Retried
from tests.support.tokens import TEST_JWT_SECRET, make_token
from tests.unit.test_routing import (
    DEAD_MS,
    NAMES,
    NOW_MS,
    call,
    delivery_of,
    frame_of,
    group_members,
    outgoing,
    route,
    sent_to,
)
from tests.unit.test_routing import (
    reply_of as command_reply_of,
)


def initialized_session() -> Session:
    """A session past ``init`` as alice."""
    session = Session("conn1", "gw1", TEST_JWT_SECRET, MidFactory("00000000aa"))
    token = make_token("alice", TEST_JWT_SECRET, 0.0, "HS256", exp=NOW_MS // 1000 + 60)
    session.on_text(json.dumps({"type": "init", "token": token}), NOW_MS)
    return session


# The frame


def test_transient_defaults_to_false_and_decodes_as_a_boolean() -> None:
    plain = frames.decode_client_frame(b'{"type":"send","id":"c1","to":"bob","body":1}')
    flagged = frames.decode_client_frame(
        b'{"type":"send","id":"c1","to":"bob","body":1,"transient":true}'
    )
    assert isinstance(plain, frames.Send)
    assert isinstance(flagged, frames.Send)
    assert (plain.transient, flagged.transient) == (False, True)


@pytest.mark.parametrize("value", ["1", '"true"', "0", "null", "[]", "{}"])
def test_transient_that_is_not_a_boolean_is_an_invalid_field(value: str) -> None:
    session = initialized_session()
    text = f'{{"type":"send","id":"c1","to":"bob","body":0,"transient":{value}}}'

    (reply,) = session.on_text(text, NOW_MS)
    assert isinstance(reply, Reply)
    frame = json.loads(reply.frame)
    assert (frame["type"], frame["code"], frame["id"]) == (
        "error",
        ErrorCode.INVALID_FIELD,
        "c1",
    )
    assert "$.transient" in frame["message"]


def test_the_session_carries_the_flag_into_the_envelope() -> None:
    session = initialized_session()
    text = '{"type":"send","id":"c1","group":"team","body":0,"transient":true}'

    (publish,) = session.on_text(text, NOW_MS)
    assert isinstance(publish, Publish)
    sent = envelopes.decode_outgoing(publish.body)
    assert (sent.group, sent.transient, sent.sender) == ("team", True, "alice")


def test_a_message_frame_names_the_flag_only_when_set() -> None:
    message = frames.Message(mid="m1", sender="a", body=msgspec.Raw(b"1"), ts=1, to="b")
    assert b"transient" not in frames.encode(message)
    transient = msgspec.structs.replace(message, transient=True)
    assert b'"transient":true' in frames.encode(transient)
    assert b'"seq"' not in frames.encode(transient)


# The routing decision


def test_a_transient_message_reaches_online_connections_only_and_is_not_durable() -> (
    None
):
    plan = route([outgoing(transient=True)], [sent_to(("k1", "gw1"), ("k2", "gw2"))])

    assert [p.exchange for p in plan.deliveries] == [NAMES.deliveries_exchange] * 2
    for publish in plan.deliveries:
        [item] = delivery_of(publish).items
        assert (item.mid, item.durable, item.stored, item.origin) == (
            "m1",
            False,
            False,
            None,
        )
        frame = frame_of(item)
        assert isinstance(frame, frames.Message)
        assert (frame.to, frame.transient) == ("bob", True)


def test_a_transient_message_to_an_offline_uid_goes_nowhere_but_is_answered() -> None:
    plan = route([outgoing(client_id="c9", transient=True)], [sent_to()])

    assert plan.deliveries == ()  # nothing for the offline store either
    [answer] = plan.replies
    assert frame_of(delivery_of(answer).items[0]) == frames.Sent(id="c9", mid="m1")


def test_a_transient_group_message_skips_members_offline_or_on_dead_gateways() -> None:
    answer = group_members(
        {"bob": (("k1", "gw1"),), "carol": (), "erin": (("k4", "gw-dead"),)}
    )
    plan = route(
        [outgoing(to=None, group="team", transient=True)],
        [answer],
        last_seen_ms={"gw-dead": DEAD_MS},
    )

    [publish] = plan.deliveries
    assert (publish.exchange, publish.routing_key) == (
        NAMES.deliveries_exchange,
        "gw1",
    )
    [item] = delivery_of(publish).items
    assert (item.targets, item.durable) == ([Target("bob", "k1")], False)


def test_a_transient_retry_is_answered_with_the_first_mid_and_routes_nothing() -> None:
    plan = route([outgoing("m2", client_id="c9", transient=True)], [Retried("m0")])

    assert plan.deliveries == ()
    [answer] = plan.replies
    assert frame_of(delivery_of(answer).items[0]) == frames.Sent(id="c9", mid="m0")


def test_a_durable_message_beside_a_transient_one_is_stored_as_before() -> None:
    batch: list[routing.Inbound] = [
        outgoing("m1", client_id="c1", transient=True),
        outgoing("m2", client_id="c2"),
    ]
    answers: list[Answer] = [sent_to(), sent_to()]
    plan = route(batch, answers)

    [stored] = plan.deliveries
    assert stored.exchange == NAMES.undeliverable_exchange
    assert [(i.mid, i.durable) for i in delivery_of(stored).items] == [("m2", True)]


def test_api_send_accepts_the_flag() -> None:
    send = msgspec.json.decode(b'{"to":"bob","body":1,"transient":true}', type=ApiSend)
    plan = route([call(send, "send", mid="m5")], [sent_to(uid="bob")])

    assert plan.deliveries == ()
    assert command_reply_of(plan) == {"mid": "m5"}
    with pytest.raises(msgspec.ValidationError, match=r"\$\.transient"):
        msgspec.json.decode(b'{"to":"bob","body":1,"transient":1}', type=ApiSend)


# The gateway's fanout


def test_a_gateway_pushes_a_transient_item_without_holding_or_handing_it_over() -> None:
    frame = b'{"type":"message","mid":"m1","transient":true}'
    item = envelopes.DeliveryItem(
        frame=msgspec.Raw(frame),
        targets=[Target("bob", "c1"), Target("bob", "gone")],
        mid="m1",
    )
    plan = plan_delivery(Delivery(items=[item]), {"c1"}, {}, ())

    assert plan.pushes == [Push("c1", frame, "m1", False, 0)]
    assert plan.handover == []
    assert plan.stale == [Target("bob", "gone")]
