"""Sweeping dead gateways out of presence: every ``SWITCHBOARD_HEARTBEAT_INTERVAL_S``, and at
once for a gateway that said it stopped.

Redis I/O through presence.py; the decisions (which gateways are dead, whether one is still
to sweep, what sweeping it removes) are liveness.py's. Several routers find the same dead
gateway: a lock in Redis lets one of them sweep it.
"""

import asyncio

import structlog
from redis.exceptions import RedisError

from router.debounce import offline_due_ms
from router.liveness import dead_gateways, is_to_sweep, sweep_requests
from router.presence import Presence, now_ms
from router.requests import (
    LockSweep,
    ReadGatewayRecord,
    UnlockSweep,
)
from router.results import (
    GatewayRecord,
    Locked,
    expect,
)
from router.settings import Settings
from runtime.shutdown import stop_if_cancelled

log = structlog.get_logger()

SWEEP_LOCK_S = 30
"""Lifetime of a sweep lock: a router that dies mid-sweep blocks others this long."""


class Sweeper:
    """Sweeps the gateways that stopped or stopped sending heartbeats."""

    def __init__(self, presence: Presence, settings: Settings) -> None:
        self._presence = presence
        self._gateway_ttl_ms = round(settings.gateway_ttl_s * 1000)
        self._debounce_ms = round(settings.presence_debounce_s * 1000)

    async def sweep_forever(self, interval_s: float) -> None:
        """Sweep dead gateways every ``interval_s``; a failed round is logged and retried."""
        while True:
            try:
                await self.sweep_dead_gateways()
            except (RedisError, OSError, TimeoutError) as exc:
                stop_if_cancelled()
                log.warning("sweep_failed", error=repr(exc))
            except Exception:
                stop_if_cancelled()
                log.exception("sweep_failed")
            await asyncio.sleep(interval_s)  # a schedule, not a synchronisation

    async def sweep_dead_gateways(self) -> None:
        """Refresh the heartbeat mirror, then sweep every gateway found dead."""
        at_ms = now_ms()
        last_seen_ms = await self._presence.refresh_gateways()
        ttl_ms = self._gateway_ttl_ms
        for gateway_id in dead_gateways(last_seen_ms, at_ms, ttl_ms):
            await self.sweep_gateway(gateway_id, stale_before_ms=at_ms - ttl_ms)

    async def sweep_gateway(self, gateway_id: str, stale_before_ms: int | None) -> None:
        """Remove a gateway's connections from presence and rooms, then its own keys.

        Args:
            gateway_id: the gateway to sweep.
            stale_before_ms: sweep only if its last heartbeat is still older than this
                (it may have come back since it was found dead); None sweeps anyway
                (the gateway said it stopped).
        """
        presence = self._presence
        [locked] = await presence.execute(
            [LockSweep(gateway_id, SWEEP_LOCK_S)], operation="sweep"
        )
        if not expect(Locked, locked).is_locked:
            return
        try:
            async with asyncio.timeout(presence.command_timeout_s):
                swept = await self._remove_gateway(gateway_id, stale_before_ms)
        finally:
            await presence.execute([UnlockSweep(gateway_id)], operation="sweep")
        if swept is not None:
            presence.forget_gateway(gateway_id)
            connections, rooms = swept
            log.info(
                "gateway_swept",
                gateway_id=gateway_id,
                connections=connections,
                rooms=rooms,
            )

    async def _remove_gateway(
        self, gateway_id: str, stale_before_ms: int | None
    ) -> tuple[int, int] | None:
        """Sweep under the lock; return how many connections and rooms went, None if
        none had to."""
        [read] = await self._presence.execute(
            [ReadGatewayRecord(gateway_id)], operation="sweep"
        )
        record = expect(GatewayRecord, read)
        if not is_to_sweep(record.last_seen_ms, stale_before_ms):
            return None  # swept by another router already, or alive again
        due_ms = offline_due_ms(now_ms(), self._debounce_ms)
        *removals, forget = sweep_requests(gateway_id, record, due_ms)
        # The gateway's record goes last, once every removal is done (their going-offline
        # entries written): a sweep that fails before finds it again next time.
        await self._presence.execute(removals, operation="sweep")
        await self._presence.execute([forget], operation="sweep")
        return len(record.connections), len(record.rooms)
