"""Routing decisions: a batch of envelopes + what Redis said about them -> publishes.

Pure: no I/O, no clock, no randomness. ``presence.py`` asks Redis (one pipeline per
batch, in batch order, so that each envelope sees the writes of the ones before it)
and hands the answers here as ``Lookup``s; ``batches.py`` performs the ``Plan``.

What a batch becomes (docs/architecture.md, "The life of a message"):

* every client frame for one gateway, across the whole batch, goes into ONE
  ``Delivery`` for that gateway's queue, its items in batch order (so a ``ready``
  precedes the messages routed to the connection it announces);
* messages whose recipient has no connection on a live gateway go into one
  ``Delivery`` on the undeliverable exchange, for the offline store;
* replay requests go out only after every delivery of the batch is confirmed, so
  that ``ready`` is in the gateway's queue before the offline store can push stored
  messages behind it.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import msgspec

from proto import envelopes, frames
from proto import names as keys
from proto.envelopes import (
    ConnClosed,
    ConnOpened,
    Delivery,
    DeliveryItem,
    GatewayStopped,
    Heartbeat,
    Outgoing,
    ReplayRequest,
    ReplayTarget,
    Saved,
    Target,
)
from proto.errors import BadEnvelope
from proto.names import Names

Inbound = ConnOpened | ConnClosed | Outgoing | Heartbeat | GatewayStopped | Saved
"""Every envelope the router consumes (``api.*`` commands aside)."""

_DECODERS: Mapping[str, Callable[[bytes], Inbound]] = {
    keys.KEY_CONN_OPENED: envelopes.decode_conn_opened,
    keys.KEY_CONN_CLOSED: envelopes.decode_conn_closed,
    keys.KEY_SEND: envelopes.decode_outgoing,
    keys.KEY_HEARTBEAT: envelopes.decode_heartbeat,
    keys.KEY_GATEWAY_STOPPED: envelopes.decode_gateway_stopped,
    keys.KEY_SAVED: envelopes.decode_saved,
}
_COMMAND_PREFIX = keys.API_KEY_PATTERN.removesuffix("#")


def is_command(routing_key: str) -> bool:
    """Tell whether a routing key carries a backend command (``api.*``)."""
    return routing_key.startswith(_COMMAND_PREFIX)


def decode_inbound(routing_key: str, body: bytes) -> Inbound:
    """Decode the body of a message from the router's queue by its routing key.

    Raises:
        BadEnvelope: the routing key is not one the router handles, or the body
            does not match its envelope (the reason carries msgspec's JSON path,
            never the body).
    """
    decoder = _DECODERS.get(routing_key)
    if decoder is None:
        raise BadEnvelope("unknown routing key")
    try:
        return decoder(body)
    except msgspec.DecodeError as exc:  # ValidationError included: both mean a bad body
        raise BadEnvelope(str(exc)) from exc


@dataclass(frozen=True, slots=True)
class Connection:
    """One connection of a uid, as ``<ns>:presence:<uid>`` records it."""

    conn_id: str
    gateway_id: str


@dataclass(frozen=True, slots=True)
class Lookup:
    """What Redis answered for one envelope, read after the envelopes before it."""

    connections: tuple[tuple[Connection, ...], ...] = ()
    """The connections of each uid the envelope names: ``to`` of an ``Outgoing``,
    every uid of a ``Saved`` in its order; empty for the other envelopes."""
    claimed_mid: str | None = None
    """For an ``Outgoing``: the mid its dedup key held before (None: it set it)."""


NO_LOOKUP = Lookup()


@dataclass(frozen=True, slots=True)
class Publish:
    """One AMQP message to publish (persistent, mandatory, with a publisher confirm)."""

    exchange: str
    routing_key: str
    body: bytes
    mid: str = ""
    """The AMQP ``message_id``: the mid when the message carries exactly one message."""


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A client retry dropped because its ``client_id`` already carried another mid."""

    mid: str
    client_id: str
    first_mid: str


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do for one batch, in this order; then the batch is acknowledged."""

    deliveries: tuple[Publish, ...] = ()
    """Published concurrently, each confirmed."""
    replays: tuple[Publish, ...] = ()
    """Published once every delivery is confirmed (``ready`` before stored ones)."""
    sweeps: tuple[str, ...] = ()
    """Gateways that stopped: sweep their presence now."""
    duplicates: tuple[Duplicate, ...] = ()
    """Client retries dropped (logged, acknowledged)."""


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


def route_batch(
    names: Names,
    batch: Sequence[Inbound],
    lookups: Sequence[Lookup],
    *,
    last_seen_ms: Mapping[str, int],
    now_ms: int,
    gateway_ttl_ms: int,
) -> Plan:
    """Decide the publishes of one batch.

    Args:
        names: the namespace's names.
        batch: the decoded envelopes, in the order they were consumed.
        lookups: one per envelope, in the same order (see ``Lookup``).
        last_seen_ms: the last heartbeat of each known gateway (Unix ms).
        now_ms: the current Unix time in milliseconds.
        gateway_ttl_ms: how long a gateway stays live after its last heartbeat.

    Returns:
        The deliveries (one per gateway, plus one for the offline store), then
        the replay requests, the gateways to sweep and the dropped client retries.

    Raises:
        ValueError: ``lookups`` does not match ``batch``.
    """
    if len(lookups) != len(batch):
        raise ValueError("one lookup per envelope is needed")

    def live(connections: Iterable[Connection]) -> list[Connection]:
        return [
            c
            for c in connections
            if is_live(last_seen_ms.get(c.gateway_id), now_ms, gateway_ttl_ms)
        ]

    per_gateway: dict[str, list[DeliveryItem]] = {}
    offline: list[DeliveryItem] = []
    replays: list[Publish] = []
    sweeps: list[str] = []
    duplicates: list[Duplicate] = []
    routed_mids: set[str] = set()
    for envelope, lookup in zip(batch, lookups, strict=True):
        match envelope:
            case Outgoing():
                claimed = lookup.claimed_mid
                if claimed is not None and claimed != envelope.mid:
                    # A client's retry: its client_id already carries another mid.
                    # (The same mid again is a redelivery after a failure: route it.)
                    duplicates.append(
                        Duplicate(envelope.mid, envelope.client_id, claimed)
                    )
                elif envelope.mid not in routed_mids:  # redelivered in this batch: once
                    routed_mids.add(envelope.mid)
                    recipient = lookup.connections[0] if lookup.connections else ()
                    route_message(envelope, live(recipient), per_gateway, offline)
            case ConnOpened():
                item = ready_item(envelope.uid, envelope.conn_id)
                per_gateway.setdefault(envelope.gateway_id, []).append(item)
                target = ReplayTarget(envelope.gateway_id, envelope.conn_id)
                replays.append(replay_publish(names, envelope.uid, [target], ""))
            case Saved():
                for saved, connections in zip(
                    envelope.uids, lookup.connections, strict=True
                ):
                    targets = [
                        ReplayTarget(c.gateway_id, c.conn_id) for c in live(connections)
                    ]
                    if targets:
                        replays.append(
                            replay_publish(names, saved.uid, targets, saved.first_mid)
                        )
            case GatewayStopped():
                sweeps.append(envelope.gateway_id)
            case ConnClosed() | Heartbeat():
                pass  # presence writes only, done by presence.py
    deliveries = [
        delivery_publish(names.deliveries_exchange, gateway_id, items)
        for gateway_id, items in per_gateway.items()
    ]
    if offline:
        deliveries.append(delivery_publish(names.undeliverable_exchange, "", offline))
    return Plan(tuple(deliveries), tuple(replays), tuple(sweeps), tuple(duplicates))


def route_message(
    outgoing: Outgoing,
    connections: Sequence[Connection],
    per_gateway: dict[str, list[DeliveryItem]],
    offline: list[DeliveryItem],
) -> None:
    """Add one message to the deliveries of the gateways holding ``connections``.

    Args:
        outgoing: the message, as the sender's gateway published it.
        connections: the recipient's connections on live gateways.
        per_gateway: the items of each gateway's delivery so far; extended in place.
        offline: the items for the offline store so far; extended when
            ``connections`` is empty.
    """
    frame = msgspec.Raw(
        frames.encode(
            frames.Message(
                mid=outgoing.mid,
                sender=outgoing.sender,
                to=outgoing.to,
                body=outgoing.body,
                ts=outgoing.ts,
            )
        )
    )
    if not connections:
        offline.append(message_item(frame, [Target(outgoing.to, "")], outgoing.mid))
        return
    targets: dict[str, list[Target]] = {}
    for connection in connections:
        targets.setdefault(connection.gateway_id, []).append(
            Target(outgoing.to, connection.conn_id)
        )
    for gateway_id, gateway_targets in targets.items():
        per_gateway.setdefault(gateway_id, []).append(
            message_item(frame, gateway_targets, outgoing.mid)
        )


def message_item(frame: msgspec.Raw, targets: list[Target], mid: str) -> DeliveryItem:
    """A message for some connections; durable: an unacknowledged copy is stored."""
    return DeliveryItem(frame=frame, targets=targets, mid=mid, durable=True)


def ready_item(uid: str, conn_id: str) -> DeliveryItem:
    """The ``ready`` frame for a connection that was just registered."""
    frame = msgspec.Raw(frames.encode(frames.Ready(uid=uid, conn=conn_id)))
    return DeliveryItem(frame=frame, targets=[Target(uid, conn_id)])


def delivery_publish(
    exchange: str, routing_key: str, items: list[DeliveryItem]
) -> Publish:
    """One ``Delivery`` with these items, as one AMQP message."""
    mids = [item.mid for item in items if item.mid]
    body = envelopes.encode(Delivery(items=items))
    return Publish(exchange, routing_key, body, mids[0] if len(mids) == 1 else "")


def replay_publish(
    names: Names, uid: str, targets: list[ReplayTarget], from_mid: str
) -> Publish:
    """Ask the offline store to replay ``uid``'s rows from ``from_mid`` to targets."""
    body = envelopes.encode(ReplayRequest(uid=uid, targets=targets, from_mid=from_mid))
    return Publish(names.inbound_exchange, keys.KEY_REPLAY, body)
