"""The debounced ``user.offline`` events: the uids whose event is due, claimed and taken out
of ``<ns>:going-offline``, and the loop that announces them.

Redis I/O through presence.py; debounce.py decides what to take and which uids this router
announces.
"""

import asyncio
from dataclasses import dataclass

import structlog

from router.bus import Bus
from router.consumer import EXPECTED_FAILURES
from router.debounce import (
    claim_requests,
    drop_requests,
    due_offline_request,
    gone_offline,
    user_offline_events,
)
from router.presence import Presence, now_ms
from router.requests import DropDueOffline
from router.results import (
    DueClaim,
    DueUids,
    expect,
)
from router.settings import Settings
from runtime.shutdown import stop_if_cancelled

log = structlog.get_logger()

OFFLINE_CHECK_MAX_S = 0.5
"""Longest wait between two looks for due ``user.offline`` events (else debounce / 4)."""


@dataclass(frozen=True, slots=True)
class DueTaken:
    """What a look at the due entries found."""

    offline: list[str]
    """The uids this router announces offline."""
    drops: list[DropDueOffline]
    """The entries to take out of the going-offline set once they are announced."""


async def take_due_offline(presence: Presence, at_ms: int) -> DueTaken:
    """Claim the uids whose debounce is over; say which this router announces offline and
    which entries to drop after.

    Two round trips, the second once the first answered (debounce.py says why): the due
    entries, then the claim of each uid. The uids this router claimed (no other router
    did, and no connection came back meanwhile) and that hold no connection now are the
    ones it announces (see debounce.gone_offline).
    """
    [read] = await presence.execute(
        [due_offline_request(at_ms)], operation="going_offline"
    )
    due = expect(DueUids, read)
    if not due.uids:
        return DueTaken([], [])
    results = await presence.execute(
        claim_requests(due, at_ms), operation="going_offline"
    )
    claims = [expect(DueClaim, result) for result in results]
    return DueTaken(gone_offline(due.uids, claims), drop_requests(due, claims))


async def announce_offline_forever(
    settings: Settings, bus: Bus, presence: Presence
) -> None:
    """Publish ``user.offline`` for the uids whose debounce is over (debounce.py explains
    the debounce); a failed round is logged and retried at the next tick.

    The entries are dropped after the events are published: a drop that fails leaves them
    to a later tick, whose claims find no offline-due key and drop them then.
    """
    interval_s = min(OFFLINE_CHECK_MAX_S, settings.presence_debounce_s / 4)
    names = settings.names
    while True:
        try:
            at_ms = now_ms()
            taken = await take_due_offline(presence, at_ms)
            await bus.publish_all(user_offline_events(names, taken.offline, at_ms))
            for uid in taken.offline:
                log.info("user_offline_published", uid=uid)
            await presence.execute(taken.drops, operation="going_offline")
        except EXPECTED_FAILURES as exc:
            stop_if_cancelled()
            log.warning("offline_announcement_failed", error=repr(exc))
        except Exception:
            stop_if_cancelled()
            log.exception("offline_announcement_failed")
        await asyncio.sleep(interval_s)  # a schedule, not a synchronisation
