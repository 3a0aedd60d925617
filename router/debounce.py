"""Debounced presence events: when a uid that lost its last connection is announced offline.

Pure: no I/O, no clock (times come in as arguments). ``user.online`` and ``user.offline`` are
debounced, so that a page reload (the last connection closes, a new one opens at once)
publishes nothing:

* when a uid's LAST connection goes (closed, kicked, or its gateway swept), nothing is
  announced: the same script sets the uid's ``<ns>:offline-due:{<uid>}`` key to when its
  event is due, ``SWITCHBOARD_PRESENCE_DEBOUNCE_S`` later (``offline_due_ms``), and the uid's
  entry in ``<ns>:going-offline`` (where routers look for due uids) is written to at least
  that time, moved on by every write: in the same script on one server, once Redis answered
  the removal on a Redis Cluster;
* when a uid's FIRST connection opens, the same script deletes that key: if it was there, the
  uid only flapped and nothing is published, else routing.py publishes ``user.online``;
* a periodic task reads the due entries (``due_offline_request``), then claims each uid
  (``claim_requests``): the router whose script deletes its offline-due key, due by now,
  publishes ``user.offline`` (exactly one) if the uid still has no connection
  (``gone_offline``); then it drops the entries (``drop_requests``), each only if it was not
  written again since it was read.

The uid's own keys and the going-offline set may be on two nodes of a Redis Cluster (scripts.py),
so no step spans both, and the order of the steps keeps every due key in the set: an entry is
written after its key (or with it), and dropped only if no write came after its read, when the
claim that followed the read saw the key (and took it, or found none), or saw a key due later
(and left the entry).
"""

from collections.abc import Iterable, Sequence

from proto.envelopes import UserOffline
from proto.names import EVENT_USER_OFFLINE, Names
from router.publications import Publication, event_publication
from router.requests import (
    ClaimDueOffline,
    DropDueOffline,
    ReadDueOffline,
)
from router.results import (
    DueClaim,
    DueUids,
)

DUE_OFFLINE_PAGE = 500
"""Most due uids taken from the going-offline set in one round."""


def offline_due_ms(now_ms: int, debounce_ms: int) -> int:
    """When a uid whose last connection went now is announced offline, if it stays so."""
    return now_ms + debounce_ms


def due_offline_request(now_ms: int) -> ReadDueOffline:
    """Read the uids whose debounce is over, a page at a time."""
    return ReadDueOffline(now_ms, DUE_OFFLINE_PAGE)


def claim_requests(due: DueUids, now_ms: int) -> list[ClaimDueOffline]:
    """Claim each due uid's ``user.offline``."""
    return [ClaimDueOffline(uid, now_ms) for uid in due.uids]


def drop_requests(due: DueUids, claims: Sequence[DueClaim]) -> list[DropDueOffline]:
    """Drop the entries read (unless written again since), but those of uids that left again
    after them: theirs stay until their own time."""
    return [
        DropDueOffline(uid, due_ms)
        for uid, due_ms, claim in zip(due.uids, due.due_ms, claims, strict=True)
        if not claim.is_pending
    ]


def gone_offline(due_uids: Sequence[str], claims: Sequence[DueClaim]) -> list[str]:
    """The due uids this router announces offline.

    Args:
        due_uids: uids whose debounce is over.
        claims: for each, whether this router's script deleted its offline-due key (so no
            other router announces it, and it did not come back meanwhile: a new first
            connection deletes it as well), and how many connections it holds now (read
            in the same script).
    """
    return [
        uid
        for uid, claim in zip(due_uids, claims, strict=True)
        if claim.was_claimed and claim.connection_count == 0
    ]


def user_offline_events(
    names: Names, uids: Iterable[str], now_ms: int
) -> list[Publication]:
    """The ``user.offline`` events of these uids."""
    return [
        event_publication(names, EVENT_USER_OFFLINE, UserOffline(uid=uid, ts=now_ms))
        for uid in uids
    ]
