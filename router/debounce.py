"""Debounced presence events: when a uid that lost its last connection is announced offline.

Pure: no I/O, no clock (times come in as arguments). ``user.online`` and ``user.offline`` are
debounced, so that a page reload (the last connection closes, a new one opens at once)
publishes nothing:

* when a uid's LAST connection goes (closed, kicked, or its gateway swept), nothing is
  announced: the uid goes into ``<ns>:going-offline``, due ``SWITCHBOARD_PRESENCE_DEBOUNCE_S``
  later (``offline_due_ms``);
* when a uid's FIRST connection opens, the same script takes the uid out of that set: if it
  was there, the uid only flapped and nothing is published, else routing.py publishes
  ``user.online``;
* a periodic task takes the due uids (``due_offline_request``); for each, the router whose
  ``ZREM`` removed it (exactly one) publishes ``user.offline`` if the uid still has no
  connection (``gone_offline``).
"""

from collections.abc import Iterable, Sequence

from proto.envelopes import UserOffline
from proto.names import EVENT_USER_OFFLINE, Names
from router.publications import Publication, event_publication
from router.requests import (
    ClaimDueOffline,
    ReadDueOffline,
)
from router.results import (
    DueClaim,
)

DUE_OFFLINE_PAGE = 500
"""Most due uids taken from the going-offline set in one round."""


def offline_due_ms(now_ms: int, debounce_ms: int) -> int:
    """When a uid whose last connection went now is announced offline, if it stays so."""
    return now_ms + debounce_ms


def due_offline_request(now_ms: int) -> ReadDueOffline:
    """Read the uids whose debounce is over, a page at a time."""
    return ReadDueOffline(now_ms, DUE_OFFLINE_PAGE)


def claim_requests(due_uids: Sequence[str]) -> list[ClaimDueOffline]:
    """Take each due uid out of the going-offline set (in one transaction: a first
    connection opening between a uid's removal and its count would otherwise be announced
    online and leave this uid's offline unannounced)."""
    return [ClaimDueOffline(uid) for uid in due_uids]


def gone_offline(due_uids: Sequence[str], claims: Sequence[DueClaim]) -> list[str]:
    """The due uids this router announces offline.

    Args:
        due_uids: uids whose debounce is over.
        claims: for each, whether this router's ``ZREM`` removed it from the
            going-offline set (so no other router announces it, and it did not
            come back meanwhile: a new first connection removes it as well), and how
            many connections it holds now (read in the same transaction as the ``ZREM``).
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
