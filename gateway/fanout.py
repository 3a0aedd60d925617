"""What a delivery from the gateway's queue means for the connections this gateway holds.

Pure: given a decoded ``Delivery`` and the set of connection ids held here, it says which frames
to push where, which of them wait for the client's ``ack``, and which copies go to the offline
store because their connection is not (or no longer) here.
"""

from collections.abc import Container
from dataclasses import dataclass

from proto.envelopes import Delivery, DeliveryItem, Target


@dataclass(frozen=True, slots=True)
class Push:
    """Push ``frame`` to one connection."""

    conn_id: str
    frame: bytes
    mid: str
    awaits_ack: bool
    """Held until the client acknowledges it, or handed to the offline store."""
    close_code: int
    """When not 0, close the connection with this code after the push."""


@dataclass(frozen=True, slots=True)
class DeliveryPlan:
    pushes: list[Push]
    handover: list[DeliveryItem]
    """Durable copies whose connections are not here: they go to the offline store."""
    stale: list[Target]
    """Connections that presence still places on this gateway, but that are gone."""


def plan_delivery(delivery: Delivery, connected: Container[str]) -> DeliveryPlan:
    """Split a delivery into pushes to held connections and copies for the offline store.

    Args:
        delivery: a decoded body from this gateway's queue.
        connected: the connection ids this gateway holds now.
    """
    pushes: list[Push] = []
    handover: list[DeliveryItem] = []
    stale: list[Target] = []
    for item in delivery.items:
        frame = bytes(item.frame)
        awaits_ack = item.durable and not item.stored
        missing: list[Target] = []
        for target in item.targets:
            if target.conn_id in connected:
                pushes.append(
                    Push(target.conn_id, frame, item.mid, awaits_ack, item.close_code)
                )
                continue
            missing.append(target)
            if target.conn_id:
                stale.append(target)
        if missing and awaits_ack:
            handover.append(
                DeliveryItem(
                    frame=item.frame, targets=missing, mid=item.mid, durable=True
                )
            )
    return DeliveryPlan(pushes, handover, stale)
