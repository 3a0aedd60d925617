"""Envelopes: the JSON bodies of AMQP messages between services, one class per routing key or queue.

Published with ``content_type=application/json`` and, where a message must survive a broker
restart, ``delivery_mode=2``. Unknown fields are ignored, so that services can be upgraded one at
a time. ``msgspec.Raw`` fields carry JSON that is passed through byte for byte, never re-encoded.

==========================  ===================  =====================================
routing key / queue          envelope             producer -> consumer
==========================  ===================  =====================================
gateway.opened               ConnOpened           gateway -> router
gateway.closed               ConnClosed           gateway -> router
gateway.send                 Outgoing             gateway -> router
gateway.heartbeat            Heartbeat            gateway -> router
gateway.stopped              GatewayStopped       gateway -> router
gateway.ack                  Acked                gateway -> offline store
store.saved                  Saved                offline store -> router
router.replay                ReplayRequest        router -> offline store
deliveries / <gateway_id>    Delivery             router, offline store -> gateway
undeliverable (fanout)       Delivery             router, gateway, dead-lettering -> offline store
==========================  ===================  =====================================
"""

import msgspec


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every envelope."""


class ConnOpened(Envelope, frozen=True):
    """A connection passed ``init``: register it, answer ``ready``, replay its offline messages."""

    uid: str
    conn_id: str
    gateway_id: str


class ConnClosed(Envelope, frozen=True):
    """A connection is gone: remove its presence."""

    uid: str
    conn_id: str
    gateway_id: str


class Outgoing(Envelope, frozen=True):
    """A ``send`` frame accepted by a gateway, with the verified sender and the server's mid."""

    mid: str
    sender: str
    client_id: str
    to: str
    body: msgspec.Raw
    ts: int
    gateway_id: str
    conn_id: str


class Acked(Envelope, frozen=True):
    """A client acknowledged these mids: their offline rows (if any) can go."""

    uid: str
    mids: list[str]


class Heartbeat(Envelope, frozen=True):
    """A gateway is alive; one silent for ``SWITCHBOARD_GATEWAY_TTL_S`` counts as dead."""

    gateway_id: str
    connections: int


class GatewayStopped(Envelope, frozen=True):
    """A gateway shut down cleanly: its presence entries can go at once."""

    gateway_id: str


class Target(msgspec.Struct, frozen=True, array_like=True):
    """One connection a delivery is for; ``conn_id`` is empty when the uid has no connection."""

    uid: str
    conn_id: str


class DeliveryItem(Envelope, frozen=True):
    """One client frame for some connections of one gateway."""

    frame: msgspec.Raw
    """The complete client frame, encoded once by its producer and pushed as it is."""
    targets: list[Target]
    mid: str = ""
    """The message's mid; empty for frames that are not messages (``ready``, ``kicked``)."""
    durable: bool = False
    """Whether a copy that misses its target (or is not acknowledged) goes to the offline store."""
    stored: bool = False
    """Replayed from the offline store, where its row stays until the client acknowledges it."""
    close_code: int = 0
    """When not 0, the gateway closes the target connections with this code after pushing."""


class Delivery(Envelope, frozen=True):
    """The frames one gateway (or the offline store) is to handle, for some of its connections."""

    items: list[DeliveryItem]


class SavedUid(msgspec.Struct, frozen=True, array_like=True):
    """A uid with new offline rows, and the smallest new mid."""

    uid: str
    first_mid: str


class Saved(Envelope, frozen=True):
    """The offline store committed new rows: a router replays them to the uids online now."""

    uids: list[SavedUid]


class ReplayTarget(msgspec.Struct, frozen=True, array_like=True):
    gateway_id: str
    conn_id: str


class ReplayRequest(Envelope, frozen=True):
    """Replay ``uid``'s offline rows with ``mid >= from_mid`` to these connections."""

    uid: str
    targets: list[ReplayTarget]
    from_mid: str = ""


encode = msgspec.json.Encoder().encode
decode_conn_opened = msgspec.json.Decoder(ConnOpened).decode
decode_conn_closed = msgspec.json.Decoder(ConnClosed).decode
decode_outgoing = msgspec.json.Decoder(Outgoing).decode
decode_acked = msgspec.json.Decoder(Acked).decode
decode_heartbeat = msgspec.json.Decoder(Heartbeat).decode
decode_gateway_stopped = msgspec.json.Decoder(GatewayStopped).decode
decode_delivery = msgspec.json.Decoder(Delivery).decode
decode_saved = msgspec.json.Decoder(Saved).decode
decode_replay_request = msgspec.json.Decoder(ReplayRequest).decode
