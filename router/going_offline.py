"""Taking the uids whose ``user.offline`` is due out of ``<ns>:going-offline``.

Redis I/O through presence.py; debounce.py decides what to take and which uids this router
announces. The batch loop's announcer publishes their events.
"""

from router.debounce import claim_requests, due_offline_request, gone_offline
from router.presence import Presence
from router.results import (
    DueClaim,
    DueUids,
    expect,
)


async def take_due_offline(presence: Presence, at_ms: int) -> list[str]:
    """Take the uids whose debounce is over and that this router is to announce offline.

    Each due uid is removed from the going-offline set; the uids this router
    removed (no other router did, and no connection came back meanwhile) and that
    hold no connection now are returned (see debounce.gone_offline).
    """
    [read] = await presence.execute([due_offline_request(at_ms)])
    due = expect(DueUids, read).uids
    if not due:
        return []
    results = await presence.execute(claim_requests(due), transaction=True)
    return gone_offline(due, [expect(DueClaim, result) for result in results])
