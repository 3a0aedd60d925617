"""The offline store's limits, with real processes: a cap of rows per uid, and a retention age.

One user filling a stranger's store must cost nobody else a message: what passes the cap is
refused with ``recipient_full`` (told to its sender), and old rows expire.
"""

import asyncio
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from proto import env, metrics
from proto.codes import ErrorCode
from proto.names import Names
from tests.integration.test_observability import grows, scrape
from tests.support.clients import Frame, RawClient
from tests.support.stack import Stack, free_port
from tests.support.timing import eventually

pytestmark = pytest.mark.integration

CAP = 20
OVER = 12
INNOCENT = CAP - 5
"""Within the cap: carol's store is not full, whatever mallory does to the victim's."""


@pytest.fixture
async def database() -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(env.DEFAULT_POSTGRES_DSN, timeout=10)
    try:
        yield connection
    finally:
        await connection.close()


def table(names: Names) -> str:
    schema, _, name = names.undelivered_table.partition(".")
    return f'"{schema}"."{name}"'


async def stored_mids(db: asyncpg.Connection, names: Names, uid: str) -> list[str]:
    records = await db.fetch(
        f"SELECT mid FROM {table(names)} WHERE uid = $1 ORDER BY mid", uid
    )
    return [record["mid"] for record in records]


async def send_all(client: RawClient, to: str, prefix: str, count: int) -> list[Frame]:
    """Send ``count`` messages without waiting in between; return their ``sent`` receipts."""
    ids = [f"{prefix}{n}" for n in range(count)]
    for n, client_id in enumerate(ids):
        await client.send_frame(
            {"type": "send", "id": client_id, "to": to, "body": {"n": n}}
        )
    receipts = []
    for client_id in ids:
        receipt = await client.expect(receipt_of(client_id))
        assert receipt["type"] == "sent", receipt
        receipts.append(receipt)
    return receipts


def receipt_of(client_id: str) -> Callable[[Frame], bool]:
    def matches(frame: Frame) -> bool:
        return frame.get("id") == client_id and frame.get("type") in ("sent", "error")

    return matches


def is_full(frame: Frame) -> bool:
    return (
        frame.get("type") == "error" and frame.get("code") == ErrorCode.RECIPIENT_FULL
    )


async def test_full_store_refuses_with_a_code_beside_innocent_traffic(
    stack: Stack, database: asyncpg.Connection
) -> None:
    store_port = free_port()
    await asyncio.gather(
        stack.start_router(),
        stack.start_store(
            **{
                env.OFFLINE_MAX_ROWS_PER_UID: str(CAP),
                env.METRICS_PORT: str(store_port),
            }
        ),
    )
    await asyncio.gather(stack.start_gateway(), stack.start_gateway())
    before = await scrape(store_port)
    mallory = await stack.connect(0, uid="mallory")
    alice = await stack.connect(1, uid="alice")

    # mallory fills the offline victim's store past its cap while alice writes to offline carol.
    flooded, innocent = await asyncio.gather(
        send_all(mallory, "victim", "m", CAP + OVER),
        send_all(alice, "carol", "a", INNOCENT),
    )

    refused = [await mallory.expect(is_full, within_s=10) for _ in range(OVER)]
    mid_of = {receipt["id"]: receipt["mid"] for receipt in flooded}
    for frame in refused:
        assert frame["mid"] == mid_of[frame["id"]]
        assert frame["to"] == "victim"
    refused_mids = {frame["mid"] for frame in refused}
    assert len(refused_mids) == OVER
    kept = await stored_mids(database, stack.names, "victim")
    assert len(kept) == CAP
    assert set(kept) == set(mid_of.values()) - refused_mids
    await mallory.expect_nothing(is_full, for_s=0.5)
    await alice.expect_nothing(is_full, for_s=0.1)

    # The refusal is logged and counted.
    store = stack.stores[0]
    await store.wait_for_event(
        "undelivered_refused", uid="victim", code=ErrorCode.RECIPIENT_FULL
    )
    assert store.count_events("undelivered_refused") == OVER
    await grows(store_port, metrics.OFFLINE_REFUSED_TOTAL, before, by=OVER)

    # Every one of alice's messages was kept, and carol gets them all at login.
    carol = await stack.connect(0, uid="carol")
    for receipt in innocent:
        message = await carol.expect_message(mid=receipt["mid"])
        assert message["from"] == "alice"
    victim = await stack.connect(1, uid="victim")
    for mid in kept:
        await victim.expect_message(mid=mid)
    assert len(await stored_mids(database, stack.names, "victim")) <= CAP


async def test_expired_rows_are_never_replayed(
    stack: Stack, database: asyncpg.Connection
) -> None:
    # The sweep does not run during the test: the replay alone must skip the old row.
    await asyncio.gather(
        stack.start_router(),
        stack.start_store(
            **{env.OFFLINE_RETENTION_S: "3600", env.OFFLINE_SWEEP_INTERVAL_S: "3600"}
        ),
    )
    await asyncio.gather(stack.start_gateway(), stack.start_gateway())
    alice = await stack.connect(0, uid="alice")
    old = await alice.send_message("carol", {"text": "old"})
    fresh = await alice.send_message("carol", {"text": "fresh"})

    async def both_stored() -> list[str] | None:
        mids = await stored_mids(database, stack.names, "carol")
        return mids if len(mids) == 2 else None

    await eventually(both_stored)
    await database.execute(
        f"UPDATE {table(stack.names)} SET stored_at = now() - interval '2 hours'"
        " WHERE uid = $1 AND mid = $2",
        "carol",
        old["mid"],
    )
    carol = await stack.connect(1, uid="carol")
    await carol.expect_message(mid=fresh["mid"])
    await carol.expect_nothing(
        lambda f: f.get("type") == "message" and f.get("mid") == old["mid"], for_s=1
    )


async def test_retention_sweep_deletes_old_rows_beside_new_ones(
    stack: Stack, database: asyncpg.Connection
) -> None:
    # Batches of 2 rows: the sweep needs several statements for the 5 old rows.
    await asyncio.gather(
        stack.start_router(),
        stack.start_store(
            **{
                env.OFFLINE_RETENTION_S: "3600",
                env.OFFLINE_SWEEP_INTERVAL_S: "0.2",
                env.BATCH_MAX: "2",
            }
        ),
    )
    await asyncio.gather(stack.start_gateway(), stack.start_gateway())
    alice = await stack.connect(0, uid="alice")
    old = [await alice.send_message("carol", {"n": n}) for n in range(5)]
    fresh = [await alice.send_message("carol", {"n": n}) for n in range(5, 7)]
    everything = {receipt["mid"] for receipt in old + fresh}

    async def stored() -> list[str] | None:
        mids = await stored_mids(database, stack.names, "carol")
        return mids if set(mids) == everything else None

    await eventually(stored)
    await database.execute(
        f"UPDATE {table(stack.names)} SET stored_at = now() - interval '2 hours'"
        " WHERE uid = $1 AND mid = ANY($2::text[])",
        "carol",
        [receipt["mid"] for receipt in old],
    )

    async def swept() -> list[str] | None:
        mids = await stored_mids(database, stack.names, "carol")
        return mids if len(mids) == len(fresh) else None

    assert set(await eventually(swept, within_s=10)) == {r["mid"] for r in fresh}
    await stack.stores[0].wait_for_event("undelivered_expired", count=len(old))
    carol = await stack.connect(1, uid="carol")
    for receipt in fresh:
        await carol.expect_message(mid=receipt["mid"])
