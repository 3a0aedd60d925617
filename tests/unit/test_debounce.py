"""debounce.py: when a uid that lost its last connection is announced offline. No event
loop, no network."""

import json

from proto.names import EVENT_USER_OFFLINE, Names
from router import debounce
from router.requests import (
    ClaimDueOffline,
    DropDueOffline,
    ReadDueOffline,
)
from router.results import (
    DueClaim,
    DueUids,
)

NAMES = Names("tunit")
NOW_MS = 1_700_000_000_000


def test_offline_is_due_after_the_debounce() -> None:
    assert debounce.offline_due_ms(NOW_MS, 2_000) == NOW_MS + 2_000


def test_due_uids_are_read_a_page_at_a_time_and_claimed_each() -> None:
    assert debounce.due_offline_request(NOW_MS) == ReadDueOffline(
        NOW_MS, debounce.DUE_OFFLINE_PAGE
    )
    due = DueUids(("a", "b"), (NOW_MS - 5, NOW_MS))
    assert debounce.claim_requests(due, NOW_MS) == [
        ClaimDueOffline("a", NOW_MS),
        ClaimDueOffline("b", NOW_MS),
    ]


def test_entries_are_dropped_at_the_time_read_but_those_due_later() -> None:
    due = DueUids(("a", "b", "c"), (NOW_MS - 5, NOW_MS - 3, NOW_MS))
    claims = [
        DueClaim(was_claimed=True, connection_count=0),
        DueClaim(was_claimed=False, connection_count=0, is_pending=True),  # left again
        DueClaim(was_claimed=False, connection_count=1),  # came back: nothing due
    ]
    assert debounce.drop_requests(due, claims) == [
        DropDueOffline("a", NOW_MS - 5),
        DropDueOffline("c", NOW_MS),
    ]


def test_only_claimed_uids_without_connections_go_offline() -> None:
    due = ["a", "b", "c", "d"]
    claims = [
        DueClaim(was_claimed=True, connection_count=0),
        DueClaim(was_claimed=False, connection_count=0),  # another router took it
        DueClaim(was_claimed=True, connection_count=1),  # it came back meanwhile
        DueClaim(was_claimed=True, connection_count=0),
    ]
    assert debounce.gone_offline(due, claims) == ["a", "d"]


def test_user_offline_events() -> None:
    [event] = debounce.user_offline_events(NAMES, ["bob"], NOW_MS)

    assert (event.exchange, event.routing_key, event.mandatory) == (
        NAMES.events_exchange,
        EVENT_USER_OFFLINE,
        False,
    )
    assert json.loads(event.body) == {"uid": "bob", "ts": NOW_MS}
