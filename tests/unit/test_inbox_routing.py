"""The router with history on: 1:1 and group messages become one ``InboxBatch`` for the
offline store, with the connections of the recipients and of the sender; rooms, broadcasts
and transient sends keep their path. Sans-I/O: the test plays Redis."""

import msgspec

from proto.envelopes import ApiSend, Origin, Outgoing
from proto.inbox import EntryTarget, InboxEntry, decode_inbox_items
from proto.names import KEY_INBOX, Names
from router import routing
from router.answers import Answer, Answers, Recipients
from router.inbound import Call, Inbound
from router.inbox_items import inbox_item, inbox_publications
from router.lookups import BatchLookup, LookupRules
from router.requests import ClaimClientId, ReadConnections, ReadGroup
from router.results import Claimed, Connections, GroupRead, PresenceEntry, RoomCounts
from router.routing import Plan

NAMES = Names("tunit")
AT_MS = 1_700_000_000_300
HISTORY = LookupRules(dedup_ttl_ms=60_000, debounce_ms=2_000, history=True)
LIVE = {"gw1": AT_MS, "gw2": AT_MS, "gw-sender": AT_MS, "gw-dead": AT_MS - 60_000}


def send(mid: str = "m1", **fields: object) -> Outgoing:
    addressing = {"to": "bob", **fields}
    return Outgoing(
        mid=mid,
        sender="alice",
        client_id="c-" + mid,
        body=msgspec.Raw(b"1"),
        ts=AT_MS,
        gateway_id="gw-sender",
        conn_id="k-sender",
        **addressing,  # type: ignore[arg-type]  # to, group, room, transient
    )


def entry(conn_id: str, gateway_id: str) -> PresenceEntry:
    return PresenceEntry(conn_id, gateway_id)


ALICE = (entry("k-sender", "gw-sender"), entry("k-laptop", "gw2"))
BOB = (entry("k1", "gw1"),)


def lookup_answers(batch: list[Inbound], *rounds: list[object]) -> list[Answer]:
    lookup = BatchLookup(batch, AT_MS, HISTORY)
    for results in rounds:
        lookup.receive(results)  # type: ignore[arg-type]  # results of the test's choice
    while not lookup.is_done:
        lookup.receive([])
    return list(lookup.answers().per_envelope)


def route(batch: list[Inbound], answers: list[Answer], history: bool = True) -> Plan:
    return routing.route_batch(
        NAMES,
        batch,
        Answers(tuple(answers), {}),
        last_seen_ms=LIVE,
        now_ms=AT_MS,
        gateway_ttl_ms=15_000,
        debounce_ms=2_000,
        history=history,
    )


def reads(request: object) -> tuple[str, ...]:
    """The uids whose connections a message's claim reads."""
    assert isinstance(request, ClaimClientId)
    return request.reads


def test_a_one_to_one_message_reads_the_senders_connections_too_in_its_claim() -> None:
    lookup = BatchLookup([send()], AT_MS, HISTORY)
    [claim] = lookup.requests()
    assert reads(claim) == ("bob", "alice")
    both = Connections((("bob", BOB), ("alice", ALICE)))
    answers = lookup_answers([send()], [Claimed(None, both)])
    assert answers == [Recipients((("bob", BOB),), ALICE)]


def test_a_group_message_reads_the_sender_last_even_alone_in_the_group() -> None:
    lookup = BatchLookup([send(to=None, group="team")], AT_MS, HISTORY)
    assert isinstance(lookup.requests()[1], ReadGroup)
    lookup.receive([Claimed(None), GroupRead(True, frozenset({"alice"}))])
    assert lookup.requests() == [ReadConnections(("alice",))]
    lookup.receive([Connections((("alice", ALICE),))])
    assert lookup.answers().per_envelope == (Recipients((), ALICE),)


def test_without_history_transient_or_to_oneself_the_sender_is_not_read() -> None:
    off = LookupRules(dedup_ttl_ms=60_000, debounce_ms=2_000)
    assert reads(BatchLookup([send()], AT_MS, off).requests()[0]) == ("bob",)
    for message in (send(transient=True), send(to="alice")):
        requests = BatchLookup([message], AT_MS, HISTORY).requests()
        assert reads(requests[0]) == (message.to or "",)


def test_api_send_as_system_enters_no_inbox_of_the_sender() -> None:
    system = Call("send", ApiSend(body=msgspec.Raw(b"1"), to="bob"), None, "m9", AT_MS)
    as_alice = Call(
        "send",
        ApiSend(body=msgspec.Raw(b"1"), to="bob", sender="alice"),
        None,
        "m8",
        AT_MS,
    )
    requests = BatchLookup([system, as_alice], AT_MS, HISTORY).requests()
    reads = [r for r in requests if isinstance(r, ReadConnections)]
    assert reads == [ReadConnections(("bob",)), ReadConnections(("bob", "alice"))]
    assert not any(isinstance(r, ClaimClientId) for r in requests)


def test_a_message_goes_to_the_inbox_and_to_no_gateway() -> None:
    plan = route([send()], [Recipients((("bob", BOB),), ALICE)])
    [publication] = plan.deliveries
    assert (publication.exchange, publication.routing_key) == (
        NAMES.inbound_exchange,
        KEY_INBOX,
    )
    assert publication.mid == "m1"
    [item] = decode_inbox_items(publication.body).items
    assert (item.mid, item.sender, item.to, item.group) == ("m1", "alice", "bob", None)
    assert item.origin == Origin("alice", "gw-sender", "k-sender", "c-m1")
    # The sender's other connection is listed, not the sending one.
    assert item.entries == [
        InboxEntry("bob", False, [EntryTarget("gw1", "k1")]),
        InboxEntry("alice", True, [EntryTarget("gw2", "k-laptop")]),
    ]
    assert b'"seq"' not in bytes(item.frame)
    # The sender is answered once the inbox batch is confirmed, as before.
    assert len(plan.replies) == 1


def test_an_offline_recipient_is_an_entry_without_targets_not_an_undeliverable() -> (
    None
):
    plan = route([send()], [Recipients((("bob", ()),), (ALICE[0],))])
    [publication] = plan.deliveries
    [item] = decode_inbox_items(publication.body).items
    assert item.entries == [InboxEntry("bob", False, []), InboxEntry("alice", True, [])]


def test_connections_on_dead_gateways_are_left_out() -> None:
    dead = (entry("k-old", "gw-dead"),)
    plan = route([send()], [Recipients((("bob", dead),), dead)])
    [item] = decode_inbox_items(plan.deliveries[0].body).items
    assert [e.targets for e in item.entries] == [[], []]


def test_transient_and_room_messages_keep_their_path() -> None:
    plan = route(
        [send("m1", transient=True), send("m2", to=None, room="lobby")],
        [Recipients((("bob", BOB),)), RoomCounts({"gw1": 1})],
    )
    assert {p.routing_key for p in plan.deliveries} == {"gw1"}
    assert all(p.exchange == NAMES.deliveries_exchange for p in plan.deliveries)


def test_with_history_off_nothing_goes_to_the_inbox() -> None:
    plan = route([send()], [Recipients((("bob", BOB),))], history=False)
    assert [p.routing_key for p in plan.deliveries] == ["gw1"]


def test_a_batch_of_messages_is_one_inbox_batch_split_by_size() -> None:
    items = [inbox_item(send(f"m{i}"), [("bob", BOB)], ALICE) for i in range(40)]
    [whole] = inbox_publications(NAMES, items, 1_000_000)
    assert [i.mid for i in decode_inbox_items(whole.body).items] == [
        f"m{i}" for i in range(40)
    ]
    parts = inbox_publications(NAMES, items, 2_000)
    assert len(parts) > 1
    assert all(len(p.body) <= 2_000 for p in parts)
    mids = [i.mid for p in parts for i in decode_inbox_items(p.body).items]
    assert mids == [f"m{i}" for i in range(40)]
