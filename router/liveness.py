"""Gateway liveness: which gateways count as live, which are dead and swept, and when a
gateway is asked to announce its connections again.

Pure: no I/O, no clock (times come in as arguments). Each gateway's last heartbeat is
``<ns>:gateways`` in Redis, mirrored by presence.py; sweeping.py sweeps the dead ones with
the requests decided here.
"""

from collections.abc import Mapping

from router.requests import (
    ForgetGateway,
    RemoveConnection,
    Request,
)
from router.results import (
    GatewayRecord,
)


def is_live(last_seen_ms: int | None, now_ms: int, gateway_ttl_ms: int) -> bool:
    """Tell whether a gateway counts as live.

    Args:
        last_seen_ms: its last heartbeat (Unix ms) as last read from Redis; None
            for a gateway not seen yet, which counts as live (it may be brand new).
        now_ms: the current Unix time in milliseconds.
        gateway_ttl_ms: how long a gateway stays live after its last heartbeat.
    """
    return last_seen_ms is None or last_seen_ms >= now_ms - gateway_ttl_ms


def dead_gateways(
    last_seen_ms: Mapping[str, int], now_ms: int, gateway_ttl_ms: int
) -> list[str]:
    """Return the gateways not heard from for ``gateway_ttl_ms``, oldest first."""
    return sorted(
        (
            gid
            for gid, seen in last_seen_ms.items()
            if not is_live(seen, now_ms, gateway_ttl_ms)
        ),
        key=lambda gid: (last_seen_ms[gid], gid),
    )


def should_reannounce(is_unknown_gateway: bool, connections: int) -> bool:
    """Tell whether to ask a gateway to announce its connections and rooms again.

    Args:
        is_unknown_gateway: Redis had no record of the gateway before this heartbeat.
        connections: the connections the heartbeat says the gateway holds.

    A gateway new to Redis that holds connections is one whose presence was lost: Redis
    restarted empty, or routers swept it while it was frozen or cut from the broker. Its
    clients are still connected, and without their presence every message for them would
    go to the offline store until they reconnect.
    """
    return is_unknown_gateway and connections > 0


def is_to_sweep(last_seen_ms: int | None, stale_before_ms: int | None) -> bool:
    """Tell whether to sweep a gateway, once its sweep lock is held.

    Args:
        last_seen_ms: its last heartbeat as Redis holds it now; None: it is gone from
            ``<ns>:gateways`` (another router swept it already).
        stale_before_ms: sweep only if that heartbeat is older than this (the gateway was
            found dead, and may have come back since); None: sweep anyway (it said it
            stopped).
    """
    if stale_before_ms is None:
        return True
    return last_seen_ms is not None and last_seen_ms < stale_before_ms


def sweep_requests(
    gateway_id: str, record: GatewayRecord, offline_due_ms: int
) -> list[Request]:
    """Remove a gateway's connections from presence (their uids going offline, due at
    ``offline_due_ms``), then its rooms and its own keys (the last request, which sweeping.py
    runs once the removals are done)."""
    removals: list[Request] = [
        RemoveConnection(uid, conn_id, gateway_id, offline_due_ms)
        for conn_id, uid in record.connections.items()
    ]
    return [*removals, ForgetGateway(gateway_id, tuple(record.rooms))]
