"""The debounced ``user.offline`` events: the uids whose event is due, taken out of
``<ns>:going-offline``, and the loop that announces them.

Redis I/O through presence.py; debounce.py decides what to take and which uids this router
announces.
"""

import asyncio

import structlog

from router.bus import Bus
from router.consumer import EXPECTED_FAILURES
from router.debounce import (
    claim_requests,
    due_offline_request,
    gone_offline,
    user_offline_events,
)
from router.presence import Presence, now_ms
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


async def take_due_offline(presence: Presence, at_ms: int) -> list[str]:
    """Take the uids whose debounce is over and that this router is to announce offline.

    Each due uid is removed from the going-offline set; the uids this router
    removed (no other router did, and no connection came back meanwhile) and that
    hold no connection now are returned (see debounce.gone_offline).
    """
    [read] = await presence.execute(
        [due_offline_request(at_ms)], operation="going_offline"
    )
    due = expect(DueUids, read).uids
    if not due:
        return []
    results = await presence.execute(
        claim_requests(due), transaction=True, operation="going_offline"
    )
    return gone_offline(due, [expect(DueClaim, result) for result in results])


async def announce_offline_forever(
    settings: Settings, bus: Bus, presence: Presence
) -> None:
    """Publish ``user.offline`` for the uids whose debounce is over (debounce.py explains
    the debounce); a failed round is logged and retried at the next tick."""
    interval_s = min(OFFLINE_CHECK_MAX_S, settings.presence_debounce_s / 4)
    names = settings.names
    while True:
        try:
            at_ms = now_ms()
            uids = await take_due_offline(presence, at_ms)
            await bus.publish_all(user_offline_events(names, uids, at_ms))
            for uid in uids:
                log.info("user_offline_published", uid=uid)
        except EXPECTED_FAILURES as exc:
            stop_if_cancelled()
            log.warning("offline_announcement_failed", error=repr(exc))
        except Exception:
            stop_if_cancelled()
            log.exception("offline_announcement_failed")
        await asyncio.sleep(interval_s)  # a schedule, not a synchronisation
