"""The AMQP messages the router publishes: deliveries (split to fit the broker's message size),
replay requests, replies to backend commands, events, and dead-lettered items.

Pure: no I/O. routing.py decides what goes in them; bus.py publishes them, each with a
publisher confirm.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from proto import envelopes
from proto.envelopes import DeliveryItem, Envelope, ReplayRequest, ReplayTarget
from proto.items import RefusedItem
from proto.names import HEADER_REJECTED_REASON, KEY_REPLAY, KEY_SYNC, Names
from proto.packing import pack_delivery
from proto.sync import SyncRequest
from router.inbound import ReplyTo


@dataclass(frozen=True, slots=True)
class Publication:
    """One AMQP message to publish (persistent, with a publisher confirm)."""

    exchange: str
    """The exchange's name; "" is the default exchange (replies to ``reply_to``)."""
    routing_key: str
    body: bytes
    mid: str = ""
    """The AMQP ``message_id``: the mid when the message carries exactly one message."""
    correlation_id: str = ""
    """The AMQP ``correlation_id`` of a reply to a backend command."""
    mandatory: bool = True
    """Whether a message no queue takes is an error (not for events and replies,
    which nobody may be waiting for)."""
    reason: str = ""
    """For a dead-lettered item: why it was refused (``HEADER_REJECTED_REASON``)."""

    @property
    def headers(self) -> dict[str, str] | None:
        """The AMQP headers of the message."""
        return {HEADER_REJECTED_REASON: self.reason} if self.reason else None


def delivery_publications(
    exchange: str, routing_key: str, items: list[DeliveryItem], max_bytes: int
) -> list[Publication]:
    """The ``Delivery`` messages with these items, each at most ``max_bytes`` (one when they
    fit, none for no items)."""
    return [
        Publication(exchange, routing_key, packed.body, _only_mid(packed.items))
        for packed in pack_delivery(items, max_bytes)
    ]


def _only_mid(items: Iterable[DeliveryItem]) -> str:
    """The AMQP ``message_id``: the mid when the items carry exactly one message."""
    mids = list(dict.fromkeys(item.mid for item in items if item.mid))
    return mids[0] if len(mids) == 1 else ""


def dead_letter_publication(
    names: Names, routing_key: str, item: RefusedItem
) -> Publication:
    """A refused item, alone, to the dead-letter exchange with its reason."""
    return Publication(
        names.dead_letter_exchange, routing_key, item.body, reason=item.reason
    )


def replay_publication(
    names: Names, uid: str, targets: list[ReplayTarget], from_mid: str
) -> Publication:
    """Ask the offline store to replay ``uid``'s rows from ``from_mid`` to targets."""
    body = envelopes.encode(ReplayRequest(uid=uid, targets=targets, from_mid=from_mid))
    return Publication(names.inbound_exchange, KEY_REPLAY, body)


def sync_publication(
    names: Names, uid: str, gateway_id: str, conn_id: str, since: int
) -> Publication:
    """Ask the offline store to sync a connection that sent ``init`` with ``since`` (history
    on): record it among its uid's recent syncs, then send the inbox after ``since``."""
    request = SyncRequest(
        uid=uid, gateway_id=gateway_id, conn_id=conn_id, since=since, register=True
    )
    return Publication(names.inbound_exchange, KEY_SYNC, envelopes.encode(request))


def reply_publication(reply_to: ReplyTo, reply: Envelope) -> Publication:
    """A command's reply: to its ``reply_to`` queue through the default exchange.

    Not mandatory: a backend that gave up waiting may have deleted its queue.
    """
    return Publication(
        "",
        reply_to.queue,
        envelopes.encode(reply),
        correlation_id=reply_to.correlation_id,
        mandatory=False,
    )


def event_publication(names: Names, routing_key: str, event: Envelope) -> Publication:
    """An event for backends; not mandatory: no backend may be listening."""
    return Publication(
        names.events_exchange, routing_key, envelopes.encode(event), mandatory=False
    )
