"""The AMQP messages the router publishes: deliveries (split to fit the broker's message size),
replay requests, replies to backend commands, events, and dead-lettered items.

Pure: no I/O. routing.py decides what goes in them; bus.py publishes them, each with a
publisher confirm.
"""

from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from proto import envelopes
from proto.envelopes import DeliveryItem, Envelope, ReplayRequest, ReplayTarget
from proto.items import RefusedItem
from proto.names import (
    HEADER_REJECTED_REASON,
    KEY_REPLAY,
    KEY_REPLAY_BATCH,
    KEY_SYNC,
    Names,
)
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


def batched_replays(
    publications: Iterable[Publication], max_bytes: int
) -> list[Publication]:
    """The batch's replay and sync requests, in order, with each run of replay requests
    (``router.replay``) in ``router.replays`` ``Batch``es of at most ``max_bytes``: a storm's
    logins cost the broker and the offline store one message per router batch, not one each.

    A run of one stays a ``router.replay``; a sync request stays alone. The offline store
    handles a ``Batch``'s requests in order, as if each had come alone.
    """
    batched: list[Publication] = []
    run: list[Publication] = []

    def close_run() -> None:
        if len(run) == 1:
            batched.append(run[0])
        elif run:
            batched.append(_replay_batch(run))
        run.clear()

    size = 0
    for publication in publications:
        if publication.routing_key != KEY_REPLAY:
            close_run()
            batched.append(publication)
            continue
        # An item costs its body and a few bytes of framing (["router.replay", ...],).
        cost = len(publication.body) + len(KEY_REPLAY) + _ITEM_FRAMING_BYTES
        if run and size + cost > max_bytes:
            close_run()
        if not run:
            size = _BATCH_FRAMING_BYTES
        run.append(publication)
        size += cost
    close_run()
    return batched


_ITEM_FRAMING_BYTES = 8
"""``["`` + ``",`` + ``]`` + ``,`` around an item's key and body, with room to spare."""
_BATCH_FRAMING_BYTES = 16
"""``{"items":[`` and ``]}``, with room to spare."""


def _replay_batch(run: list[Publication]) -> Publication:
    batch = envelopes.Batch(
        items=[
            envelopes.Batched(KEY_REPLAY, msgspec.Raw(publication.body))
            for publication in run
        ]
    )
    return Publication(run[0].exchange, KEY_REPLAY_BATCH, envelopes.encode(batch))


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
