"""An ``api.send`` to a list of uids: decoding, what it reads in Redis, and what it publishes."""

import json

import msgspec
import pytest

from proto import envelopes, frames
from proto.codes import ErrorCode
from proto.envelopes import ApiSend, Target
from proto.frames import MAX_SEND_UIDS
from proto.inbox import InboxBatch
from router import inbound, routing
from router.answers import Answers, Multicast, Recipients, Retried
from router.inbound import Call, Refused, ReplyTo
from router.lookups import BatchLookup, LookupRules
from router.plan import Plan
from router.requests import ClaimClientId, ReadConnections
from router.results import Claimed, Connections, PresenceEntry
from tests.unit.test_routing import DEBOUNCE_MS, LIVE_MS, NAMES, NOW_MS, TTL_MS

REPLY_TO = ReplyTo("amq.gen-reply", "corr-1")
DEDUP_TTL_MS = 60_000
WINDOW = NOW_MS // DEDUP_TTL_MS
EXPIRE_AT_MS = (WINDOW + 2) * DEDUP_TTL_MS
RULES = LookupRules(dedup_ttl_ms=DEDUP_TTL_MS, debounce_ms=DEBOUNCE_MS)
HISTORY = LookupRules(dedup_ttl_ms=DEDUP_TTL_MS, debounce_ms=DEBOUNCE_MS, history=True)
LIVE = {"gw1": LIVE_MS, "gw2": LIVE_MS}


def decode(body: dict[str, object]) -> Call | Refused:
    decoded = inbound.decode_command(
        "api.send", json.dumps(body).encode(), REPLY_TO, mid="m0", ts=NOW_MS
    )
    assert not isinstance(decoded, inbound.ServedByStore)
    return decoded


def multicast(
    uids: list[str], client_id: str | None = None, sender: str = "system"
) -> Call:
    command = ApiSend(to=uids, body=msgspec.Raw(b"1"), id=client_id, sender=sender)
    call = Call("send", command, REPLY_TO, "m0", NOW_MS)
    return inbound.with_mids(call, [f"m{i + 1}" for i in range(len(uids))])


def held(conn_id: str, gateway_id: str) -> tuple[PresenceEntry, ...]:
    return (PresenceEntry(conn_id, gateway_id),)


def plan_of(call: Call, answer: Multicast, history: bool = False) -> Plan:
    return routing.route_batch(
        NAMES,
        [call],
        Answers((answer,), {}),
        last_seen_ms=LIVE,
        now_ms=NOW_MS,
        gateway_ttl_ms=TTL_MS,
        debounce_ms=DEBOUNCE_MS,
        history=history,
    )


def reply_of(plan: Plan) -> dict[str, object]:
    [publish] = plan.replies
    assert (publish.routing_key, publish.correlation_id) == (
        REPLY_TO.queue,
        REPLY_TO.correlation_id,
    )
    reply: dict[str, object] = json.loads(publish.body)
    return reply


# Decoding


def test_a_list_of_uids_decodes_to_a_multicast_that_needs_a_mid_per_uid() -> None:
    call = decode({"to": ["bob", "carol"], "body": {"text": "hi"}, "id": "d-7"})

    assert isinstance(call, Call)
    assert inbound.multicast_uids(call) == ["bob", "carol"]
    assert inbound.outgoing_of(call) is None
    with pytest.raises(ValueError, match="one mid per uid"):
        inbound.with_mids(call, ["m1"])
    bob, carol = inbound.outgoings_of(inbound.with_mids(call, ["m1", "m2"]))
    assert (bob.to, bob.mid, bob.client_id, bob.sender) == (
        "bob",
        "m1",
        "d-7/bob",
        "system",
    )
    assert (carol.to, carol.mid, carol.client_id) == ("carol", "m2", "d-7/carol")
    assert bytes(bob.body) == b'{"text": "hi"}'


def test_a_send_to_one_uid_is_no_multicast() -> None:
    call = decode({"to": "bob", "body": 1})

    assert isinstance(call, Call)
    assert inbound.multicast_uids(call) is None
    [outgoing] = inbound.outgoings_of(call)
    assert (outgoing.to, outgoing.mid) == ("bob", "m0")


@pytest.mark.parametrize(
    ("to", "path"),
    [
        ([], "$.to"),
        ([f"u{i}" for i in range(MAX_SEND_UIDS + 1)], "$.to"),
        (["bob", "not a uid"], "$.to[1]"),
        (["bob", ""], "$.to[1]"),
        (["bob", "carol", "bob"], "$.to"),
        (["bob", 7], "$.to[1]"),
    ],
)
def test_a_bad_list_is_refused_as_an_invalid_field(to: list[object], path: str) -> None:
    refused = decode({"to": to, "body": 1})

    assert isinstance(refused, Refused)
    assert (refused.code, refused.reply_to) == (ErrorCode.INVALID_FIELD, REPLY_TO)
    assert path in refused.reason


def test_the_most_uids_are_accepted_and_a_list_with_a_group_is_not() -> None:
    most = decode({"to": [f"u{i}" for i in range(MAX_SEND_UIDS)], "body": 1})
    both = decode({"to": ["bob"], "group": "team", "body": 1})

    assert isinstance(most, Call)
    assert isinstance(both, Refused)
    assert both.code == ErrorCode.INVALID_FIELD


def test_a_multicast_reply_names_each_mid_and_a_single_one_is_unchanged() -> None:
    assert envelopes.encode(envelopes.SendReply(mid="m1")) == b'{"mid":"m1"}'
    assert (
        envelopes.encode(envelopes.SendReply(mids={"bob": "m1"}))
        == b'{"mids":{"bob":"m1"}}'
    )


# Lookups


def test_every_recipient_is_read_in_one_request_after_the_claims() -> None:
    lookup = BatchLookup([multicast(["bob", "carol"], "d-7")], NOW_MS, RULES)

    assert lookup.requests() == [
        ClaimClientId("system", "d-7/bob", "m1", WINDOW, EXPIRE_AT_MS, True),
        ClaimClientId("system", "d-7/carol", "m2", WINDOW, EXPIRE_AT_MS, True),
        ReadConnections(("bob", "carol")),
    ]
    by_uid = (("bob", held("k1", "gw1")), ("carol", ()))
    # bob's claim carries another mid: a retry; carol's is this one's (a redelivery).
    lookup.receive([Claimed("m-first"), Claimed("m2"), Connections(by_uid)])
    lookup.receive([])

    assert lookup.answers().per_envelope == (
        Multicast((Retried("m-first"), Recipients((("carol", ()),)))),
    )


def test_without_an_id_nothing_is_claimed() -> None:
    lookup = BatchLookup([multicast(["bob"])], NOW_MS, RULES)

    assert lookup.requests() == [ReadConnections(("bob",))]


def test_with_history_the_sender_is_read_once_for_its_own_entries() -> None:
    call = multicast(["bob", "alice"], sender="alice")
    lookup = BatchLookup([call], NOW_MS, HISTORY)

    assert lookup.requests() == [ReadConnections(("bob", "alice", "alice"))]
    own = held("k9", "gw2")
    by_uid = (("bob", ()), ("alice", own), ("alice", own))
    lookup.receive([Connections(by_uid)])
    lookup.receive([])

    # A message to the sender itself has no entry of its own (as a 1:1 one).
    assert lookup.answers().per_envelope == (
        Multicast((Recipients((("bob", ()),), own), Recipients((("alice", own),)))),
    )


def test_a_system_multicast_with_history_reads_no_sender() -> None:
    lookup = BatchLookup([multicast(["bob", "carol"])], NOW_MS, HISTORY)

    assert lookup.requests() == [ReadConnections(("bob", "carol"))]


# Routing


def test_each_recipient_gets_its_own_message_in_one_delivery_per_gateway() -> None:
    call = multicast(["bob", "carol", "dave", "erin"], "d-7")
    answer = Multicast(
        (
            Recipients((("bob", held("k1", "gw1")),)),
            Recipients((("carol", held("k2", "gw2")),)),
            Recipients((("dave", held("k3", "gw1")),)),
            Recipients((("erin", ()),)),
        )
    )
    plan = plan_of(call, answer)

    assert [(p.exchange, p.routing_key) for p in plan.deliveries] == [
        (NAMES.deliveries_exchange, "gw1"),
        (NAMES.deliveries_exchange, "gw2"),
        (NAMES.undeliverable_exchange, ""),
    ]
    gw1, gw2, stored = (
        envelopes.decode_delivery(p.body).items for p in plan.deliveries
    )
    assert [(i.mid, i.targets) for i in gw1] == [
        ("m1", [Target("bob", "k1")]),
        ("m3", [Target("dave", "k3")]),
    ]
    assert [(i.mid, i.targets) for i in gw2] == [("m2", [Target("carol", "k2")])]
    assert [(i.mid, i.targets) for i in stored] == [("m4", [Target("erin", "")])]
    frame = frames.decode_server_frame(bytes(gw1[0].frame))
    assert isinstance(frame, frames.Message)
    assert (frame.mid, frame.to, frame.sender) == ("m1", "bob", "system")
    assert reply_of(plan) == {
        "mids": {"bob": "m1", "carol": "m2", "dave": "m3", "erin": "m4"}
    }


def test_a_retry_delivers_nothing_and_is_answered_with_the_first_mids() -> None:
    call = multicast(["bob", "carol"], "d-7")
    answer = Multicast((Retried("f1"), Retried("f2")))
    plan = plan_of(call, answer)

    assert plan.deliveries == ()
    assert [(d.mid, d.client_id, d.first_mid) for d in plan.duplicates] == [
        ("m1", "d-7/bob", "f1"),
        ("m2", "d-7/carol", "f2"),
    ]
    assert reply_of(plan) == {"mids": {"bob": "f1", "carol": "f2"}}


def test_a_copy_redelivered_in_the_same_batch_is_routed_and_answered_once() -> None:
    call = multicast(["bob"], "d-7")
    answer = Multicast((Recipients((("bob", held("k1", "gw1")),)),))
    plan = routing.route_batch(
        NAMES,
        [call, call],
        Answers((answer, answer), {}),
        last_seen_ms=LIVE,
        now_ms=NOW_MS,
        gateway_ttl_ms=TTL_MS,
        debounce_ms=DEBOUNCE_MS,
    )

    [delivery] = plan.deliveries
    assert len(envelopes.decode_delivery(delivery.body).items) == 1
    assert len(plan.replies) == 1


def test_with_history_each_message_enters_the_inbox_as_a_1_to_1_one() -> None:
    call = multicast(["bob", "carol"], sender="alice")
    own = held("k9", "gw2")
    answer = Multicast(
        (
            Recipients((("bob", held("k1", "gw1")),), own),
            Recipients((("carol", ()),), own),
        )
    )
    plan = plan_of(call, answer, history=True)

    [publish] = plan.deliveries
    batch = msgspec.json.decode(publish.body, type=InboxBatch)
    assert [(i.mid, i.to, i.sender) for i in batch.items] == [
        ("m1", "bob", "alice"),
        ("m2", "carol", "alice"),
    ]
    assert [[(e.uid, e.own) for e in i.entries] for i in batch.items] == [
        [("bob", False), ("alice", True)],
        [("carol", False), ("alice", True)],
    ]
    assert reply_of(plan) == {"mids": {"bob": "m1", "carol": "m2"}}
