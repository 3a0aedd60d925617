"""The limits a router decides: the rate per uid across gateways, and who may see whose
presence.

Pure: no I/O, no clock (times come in as arguments). lookups.py asks Redis for what these
need, in the batch's pipeline; routing.py publishes what they decide.

* The presence policy (``SWITCHBOARD_PRESENCE_POLICY``): a client's ``presence`` frame is
  refused with ``forbidden`` (``nobody``), or answered with the uids it may see online
  (``sees_presence``; the others look offline), or with every uid online (``everyone``).
* The rate per uid across gateways (``UidRate``): each batch adds the cost of each uid's
  ``send`` and ``presence`` frames to a counter of the current window in Redis; the batch
  that takes a uid over its burst sends every live gateway a ``throttle_uid`` item, and they
  answer that uid's frames ``rate_limited`` until the window ends (``throttle_for_ms``). The
  frames already routed stay routed: each was answered ``sent`` before the router saw it.
"""

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from proto.envelopes import Outgoing, PresenceAsked
from proto.limits import THROTTLE_MIN_MS, frame_cost
from router.inbound import Inbound


def sees_presence(
    asker: str, uid: str, asker_groups: Collection[str], uid_groups: Collection[str]
) -> bool:
    """Whether ``asker`` may see ``uid``'s presence under the ``shared_group`` policy.

    Args:
        asker: the uid of the client that asks.
        uid: the uid asked about.
        asker_groups: the groups ``asker`` is a member of.
        uid_groups: the groups ``uid`` is a member of.
    """
    return uid == asker or not set(asker_groups).isdisjoint(uid_groups)


@dataclass(frozen=True, slots=True)
class UidRate:
    """The rate per uid across gateways: at most ``burst`` frames (``frame_cost``) per window
    of ``window_ms`` (``burst / rate`` seconds), windows counted from the epoch."""

    window_ms: int
    burst: int


@dataclass(frozen=True, slots=True)
class Throttled:
    """A uid over its rate across gateways, refused by every gateway for ``throttle_ms``."""

    uid: str
    throttle_ms: int


def uid_rate(per_s: float, burst: int) -> UidRate | None:
    """The per-uid limit of these settings; None when ``per_s`` is 0 (no limit)."""
    if per_s <= 0:
        return None
    return UidRate(window_ms=max(1, round(burst / per_s * 1000)), burst=burst)


def uid_costs(batch: Sequence[Inbound]) -> dict[str, tuple[int, int]]:
    """What each uid's client frames in the batch cost, and the index of its last envelope.

    Counted: ``send`` (one frame) and ``presence`` (``frame_cost`` of its uids) from clients;
    not what backends send (they have no gateway), nor logins, room changes or acks.
    """
    costs: dict[str, tuple[int, int]] = {}
    for index, envelope in enumerate(batch):
        match envelope:
            case Outgoing(sender=uid, gateway_id=gateway_id) if gateway_id:
                cost = 1
            case PresenceAsked(uid=uid, uids=uids):
                cost = frame_cost(len(uids))
            case _:
                continue
        costs[uid] = (costs.get(uid, (0, index))[0] + cost, index)
    return costs


def throttle_for_ms(count: int, cost: int, rate: UidRate, now_ms: int) -> int:
    """How long to refuse a uid's frames, now that its window's count is ``count``.

    Args:
        count: the cost of the uid's frames in the current window, this batch's included.
        cost: this batch's part of it.
        rate: the limit.
        now_ms: the current Unix time in milliseconds (the window is ``now_ms // window_ms``).

    Returns:
        0 unless this batch took the uid over ``burst`` (a uid over it already was throttled
        by the batch that took it there); else until the window ends, at least
        ``THROTTLE_MIN_MS``.
    """
    if count <= rate.burst or count - cost > rate.burst:
        return 0
    window_end_ms = (now_ms // rate.window_ms + 1) * rate.window_ms
    return max(window_end_ms - now_ms, THROTTLE_MIN_MS)
