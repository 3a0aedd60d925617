"""The plan of one batch: what to publish and what to write in Redis, in which order, and the
builder that gathers it, one delivery per gateway.

Pure: no I/O. routing.py decides what goes in a plan; consumer.py performs it.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from proto import frames
from proto.envelopes import DeliveryItem, Envelope, Outgoing, Target
from proto.inbox import InboxItem
from proto.names import Names
from proto.topology import store_paths
from router.delivery_items import add_message_items, frame_item
from router.inbound import ReplyTo
from router.inbox_items import inbox_item, inbox_publications
from router.limits import Throttled
from router.liveness import is_live
from router.publications import (
    Publication,
    batched_replays,
    delivery_publications,
    reply_publication,
)
from router.requests import MarkKnown, RemoveConnection
from router.results import PresenceEntry


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A retry dropped because its ``client_id`` already carried another mid."""

    mid: str
    client_id: str
    first_mid: str


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do for one batch, in this order; then the batch is acknowledged."""

    deliveries: tuple[Publication, ...] = ()
    """Published concurrently, each confirmed."""
    events: tuple[Publication, ...] = ()
    """``user.online`` events, published with the deliveries."""
    removals: tuple[RemoveConnection, ...] = ()
    """Kicked connections: out of presence once the ``kicked`` frames are queued (a
    batch that fails before finds them again when it is redelivered)."""
    replays: tuple[Publication, ...] = ()
    """Published once every delivery is confirmed (``ready`` before stored ones)."""
    replies: tuple[Publication, ...] = ()
    """Published once every delivery is confirmed: ``sent`` (or ``not_member``) to
    client senders, replies to backend commands."""
    sweeps: tuple[str, ...] = ()
    """Gateways that stopped: sweep their presence now."""
    known: tuple[MarkKnown, ...] = ()
    """Gateways whose heartbeat found no record of them: recorded as known once the
    deliveries (the re-announce request among them) are confirmed. Recorded before, a batch
    that fails and comes back would find them known and never ask again."""
    duplicates: tuple[Duplicate, ...] = ()
    """Retries dropped (logged, acknowledged, answered with the first mid)."""
    throttled: tuple[Throttled, ...] = ()
    """Uids over their rate across gateways, whose throttle items are in the deliveries
    (logged and counted)."""


class PlanBuilder:
    """The plan of one batch so far, its items grouped per gateway in batch order."""

    def __init__(
        self,
        names: Names,
        last_seen_ms: Mapping[str, int],
        now_ms: int,
        gateway_ttl_ms: int,
        offline_due_ms: int,
        max_message_bytes: int,
        history: bool = False,
    ) -> None:
        self.names = names
        self.history = history
        """``SWITCHBOARD_HISTORY``: 1:1 and group messages go to the store's inbox."""
        self.now_ms = now_ms
        self.offline_due_ms = offline_due_ms
        """When a uid that loses its last connection in this batch is announced offline."""
        self._last_seen_ms = last_seen_ms
        self._gateway_ttl_ms = gateway_ttl_ms
        self._max_message_bytes = max_message_bytes
        self._per_gateway: dict[str, list[DeliveryItem]] = {}
        self._offline: list[DeliveryItem] = []
        self._inbox: list[InboxItem] = []
        self._answers: dict[str, list[DeliveryItem]] = {}
        self._replies: list[Publication] = []
        self.events: list[Publication] = []
        self.removals: list[RemoveConnection] = []
        self.replays: list[Publication] = []
        self.sweeps: list[str] = []
        self.known: list[MarkKnown] = []
        self.duplicates: list[Duplicate] = []
        self.throttled: list[Throttled] = []
        self.routed_mids: set[str] = set()
        """The mids routed so far: a redelivered copy in the same batch is routed once."""

    def is_live(self, gateway_id: str) -> bool:
        seen = self._last_seen_ms.get(gateway_id)
        return is_live(seen, self.now_ms, self._gateway_ttl_ms)

    def live(self, connections: Iterable[PresenceEntry]) -> list[PresenceEntry]:
        return [c for c in connections if self.is_live(c.gateway_id)]

    def live_gateways(self) -> list[str]:
        return sorted(g for g in self._last_seen_ms if self.is_live(g))

    def deliver(self, gateway_id: str, item: DeliveryItem) -> None:
        self._per_gateway.setdefault(gateway_id, []).append(item)

    def deliver_message(
        self,
        outgoing: Outgoing,
        recipients: Sequence[tuple[str, Sequence[PresenceEntry]]],
    ) -> None:
        """A message for these uids (with their live connections): one item per gateway,
        one for the offline store."""
        add_message_items(outgoing, recipients, self._per_gateway, self._offline)

    def enter_inbox(
        self,
        outgoing: Outgoing,
        recipients: Sequence[tuple[str, Sequence[PresenceEntry]]],
        own: Sequence[PresenceEntry] | None,
    ) -> None:
        """A 1:1 or group message for the offline store's inbox (history on), which delivers
        it once numbered."""
        self._inbox.append(inbox_item(outgoing, recipients, own))

    def answer(self, outgoing: Outgoing, frame: frames.ServerFrame) -> None:
        """A frame for the sender's connection, once the batch's deliveries are confirmed."""
        target = Target(outgoing.sender, outgoing.conn_id)
        self._answers.setdefault(outgoing.gateway_id, []).append(
            frame_item(frame, [target])
        )

    def reply(self, reply_to: ReplyTo | None, reply: Envelope) -> None:
        """A backend command's reply, if it wants one."""
        if reply_to is not None:
            self._replies.append(reply_publication(reply_to, reply))

    def build(self) -> Plan:
        limit = self._max_message_bytes
        deliveries = [
            publication
            for gateway_id, items in self._per_gateway.items()
            for publication in delivery_publications(
                self.names.deliveries_exchange, gateway_id, items, limit
            )
        ]
        undeliverable = store_paths(self.names).undeliverable
        deliveries += delivery_publications(
            undeliverable.exchange, undeliverable.routing_key, self._offline, limit
        )
        deliveries += inbox_publications(self.names, self._inbox, limit)
        answers = [
            publication
            for gateway_id, items in self._answers.items()
            for publication in delivery_publications(
                self.names.deliveries_exchange, gateway_id, items, limit
            )
        ]
        return Plan(
            deliveries=tuple(deliveries),
            events=tuple(self.events),
            removals=tuple(self.removals),
            replays=tuple(batched_replays(self.replays, limit)),
            replies=(*answers, *self._replies),
            sweeps=tuple(self.sweeps),
            known=tuple(self.known),
            duplicates=tuple(self.duplicates),
            throttled=tuple(self.throttled),
        )
