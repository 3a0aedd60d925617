"""What an offline store logs when it keeps messages for uids that are away, in either mode.

With history off a store keeps them from ``<ns>.offline`` and logs ``undelivered_stored``
(``count``: rows inserted); with history on it keeps them in the transaction that writes an inbox
batch and logs ``inbox_written`` (``undelivered``: rows kept). Messages handed over by a gateway
are ``undelivered_stored`` in both. Either line is logged once the rows are committed and
announced (``Saved``) to the routers: a uid that logs in after it gets the rows in its login's
replay alone (a router handles the announcement first, while the uid is away), where one that
logs in during the write may get them twice, as at-least-once allows.
"""

from tests.support.processes import ServiceProcess
from tests.support.timing import eventually


def rows_stored(store: ServiceProcess) -> int:
    """Rows this store has logged as kept for uids that were away, so far."""
    return sum(
        event.get("count", 0)
        if event.get("event") == "undelivered_stored"
        else event.get("undelivered", 0)
        for event in store.events
        if event.get("event") in {"undelivered_stored", "inbox_written"}
    )


async def wait_for_rows_stored(
    store: ServiceProcess, rows: int = 1, within_s: float = 10.0
) -> None:
    """Wait until the store has logged ``rows`` rows kept (see the module's docstring)."""

    async def probe() -> bool | None:
        return True if rows_stored(store) >= rows else None

    await eventually(probe, within_s)
