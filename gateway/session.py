"""One connection's protocol state: a client frame in, effects out. Decides, never awaits.

``ws.py`` feeds it the frames a client sends, and ``perform.py`` carries out the effects it
returns (``effects.py``): replies to the client, publishes to the broker, room changes for the
hub's index, a close. Time and mids come in as arguments. A frame is decoded and checked in
``decoding.py``; what a verified token allows is read in ``tokens.py``; the envelopes of the
frames that are published are built in ``frame_envelopes.py`` and ``queries.py``.

Answers to the frames that are published (every ``id`` gets exactly one):

- ``send``: nothing here once the broker confirmed. The router answers ``sent`` (or, for a
  group, ``not_member``) once the message is routed, because only it knows whether the ``id`` was
  used before: a retry is answered with the mid of the first frame with that id, the one its
  recipients got, on whatever connection and gateway the retry comes.
- ``join`` / ``leave``: ``joined`` / ``left`` once the broker confirmed; the room is recorded
  (or dropped) at that moment, here and in the hub's index.
- ``presence``: nothing here; the router answers with a delivery to this connection. It costs
  more than one frame against the rate limit (``last_frame_cost``).
- ``history``, ``read``, ``conversations``: nothing here; the offline store answers with a
  delivery. While history is off they are answered ``history_off`` (``queries.py``).
- ``send`` and ``presence`` of a uid the routers throttled (over its rate across gateways):
  ``rate_limited``, nothing published.
- Any of them when the broker does not confirm: ``unavailable`` with the frame's id.

``refresh`` is answered here (``refreshed``, or an error with its id: ``credentials.py``
decides); the connection is closed with 4004 once its token's ``exp`` passes (``expires_s``,
which ``ws.py`` watches).
"""

from gateway.credentials import Verifier
from gateway.decoding import client_id_of, read_frame
from gateway.effects import (
    Acknowledge,
    Close,
    Effect,
    FetchKeys,
    JoinRoom,
    LeaveRoom,
    Publish,
    Reply,
    error_frame,
)
from gateway.frame_envelopes import outgoing, presence_asked, room_joined, room_left
from gateway.keyset import Fetch
from gateway.limits import Limit
from gateway.queries import history_asked
from gateway.tokens import DEFAULT_ALGORITHM, Identity, TokenRules
from proto import envelopes, frames, limits
from proto.codes import CloseCode, ErrorCode
from proto.errors import FrameRejected
from proto.metrics import FRAME_TYPE_BINARY, FRAME_TYPE_UNKNOWN
from proto.mids import MidFactory
from proto.names import (
    KEY_ACK,
    KEY_CONN_CLOSED,
    KEY_CONN_OPENED,
    KEY_ROOM_JOINED,
    KEY_ROOM_LEFT,
)

_PONG = frames.encode(frames.Pong())

_INIT_CLOSE_CODES = {
    ErrorCode.TOKEN_EXPIRED: CloseCode.TOKEN_EXPIRED,
    # The identity provider's keys could not be fetched: not the token's fault.
    ErrorCode.UNAVAILABLE: CloseCode.TRY_AGAIN_LATER,
}
"""How a refused ``init`` closes; any other refusal is terminal (``INVALID_TOKEN``)."""

DEFAULT_MAX_ROOMS_PER_CONNECTION = 100
"""Rooms one connection may be in at once; a join beyond is refused with ``forbidden``."""


class Session:
    """The protocol state of one connection, from accept to close.

    Args:
        conn_id: this connection's id, unique across the system.
        gateway_id: the gateway holding the connection.
        verifier: what verifies ``init`` and ``refresh`` tokens, or the key alone (an HMAC
            secret or a PEM public key for ``jwt_algorithm``).
        mids: this process's mid factory.
        public_room_prefix: rooms whose name starts with it may be joined without a claim;
            empty: no public rooms (``SWITCHBOARD_PUBLIC_ROOM_PREFIX``).
        max_rooms: how many rooms the connection may be in at once.
        jwt_algorithm: the one algorithm tokens may be signed with, when ``verifier`` is a
            key.
        is_history_on: ``SWITCHBOARD_HISTORY``: ``init``'s ``since`` is passed on, and the
            history frames are published; off, ``since`` is ignored and they are refused.
    """

    # One per connection: slots keep an idle connection's memory down (no __dict__).
    __slots__ = (
        "_is_history_on",
        "_max_rooms",
        "_mids",
        "_public_room_prefix",
        "_verifier",
        "conn_id",
        "gateway_id",
        "identity",
        "last_frame_cost",
        "last_frame_type",
        "rooms",
        "since",
    )

    def __init__(
        self,
        conn_id: str,
        gateway_id: str,
        verifier: Verifier | str,
        mids: MidFactory,
        *,
        public_room_prefix: str = "",
        max_rooms: int = DEFAULT_MAX_ROOMS_PER_CONNECTION,
        jwt_algorithm: str = DEFAULT_ALGORITHM,
        is_history_on: bool = False,
    ) -> None:
        self.conn_id = conn_id
        self.gateway_id = gateway_id
        self._verifier = (
            verifier
            if isinstance(verifier, Verifier)
            else Verifier(verifier, TokenRules(jwt_algorithm))
        )
        self._mids = mids
        self._public_room_prefix = public_room_prefix
        self._max_rooms = max_rooms
        self._is_history_on = is_history_on
        self.identity: Identity | None = None
        """Set by a verified ``init``; the only source of this connection's uid and rights."""
        self.rooms: frozenset[str] = frozenset()
        """The rooms whose join the broker confirmed, and whose leave it did not; replaced on
        each change (the empty one is shared, where an empty set would cost 216 bytes)."""
        self.since: int | None = None
        """History on: the ``init``'s ``since`` (a syncing connection, ``syncing.py``)."""
        self.last_frame_type = ""
        """The ``type`` of the last frame handled (``unknown`` when it had none that is known,
        ``binary`` for a binary frame), for the frame counters; decided while decoding."""
        self.last_frame_cost = 1.0
        """What the last frame handled costs against the rate limit, in frames (more than one
        for a ``presence`` frame: ``proto.limits.frame_cost``; a tenth for an ``ack``)."""

    @property
    def uid(self) -> str | None:
        return None if self.identity is None else self.identity.uid

    @property
    def is_initialized(self) -> bool:
        return self.identity is not None

    @property
    def expires_s(self) -> float:
        """When the token's ``exp`` (plus the leeway) passes, in Unix seconds: then the
        connection is to be closed with 4004; infinite before ``init``."""
        if self.identity is None:
            return float("inf")
        return self._verifier.expires_s(self.identity)

    def on_text(
        self,
        text: str | bytes,
        now_ms: int,
        is_uid_throttled: bool = False,
        may_fetch_keys: bool = True,
    ) -> list[Effect]:
        """Decide what a text frame from the client leads to.

        ``is_uid_throttled``: the routers said this uid sent too much across its connections
        (the hub keeps it): its ``send`` and ``presence`` frames are refused for now.
        ``may_fetch_keys``: False when the frame comes back after the ``FetchKeys`` it led to.
        """
        self.last_frame_type = FRAME_TYPE_UNKNOWN
        self.last_frame_cost = 1.0
        try:
            frame = read_frame(text)
            self.last_frame_type = str(frame.__struct_config__.tag)
            if isinstance(frame, frames.PresenceQuery):
                self.last_frame_cost = limits.frame_cost(len(frame.uids))
            elif isinstance(frame, frames.Ack):
                self.last_frame_cost = limits.ACK_FRAME_COST
            if is_uid_throttled and isinstance(
                frame, frames.Send | frames.PresenceQuery
            ):
                return self._uid_throttled(frame.id)
            return self._on_frame(frame, now_ms, may_fetch_keys)
        except FrameRejected as rejected:
            return self._rejected(rejected)

    def on_binary(self) -> list[Effect]:
        self.last_frame_type = FRAME_TYPE_BINARY
        code = ErrorCode.UNSUPPORTED_FRAME
        return [
            Reply(
                error_frame(code, "binary frames are not supported; send JSON text"),
                code,
            )
        ]

    def on_rate_limited(
        self, text: str | bytes, is_flooding: bool, limit: Limit = Limit.FRAMES
    ) -> list[Effect]:
        """A frame over one of the connection's rate limits: ``rate_limited`` with its id, if
        it has one; when the client keeps flooding, a close with ``CloseCode.RATE_LIMITED``
        too."""
        self.last_frame_type = FRAME_TYPE_UNKNOWN
        client_id = client_id_of(text)
        code = ErrorCode.RATE_LIMITED
        message = (
            "too many bytes; slow down"
            if limit is Limit.BYTES
            else "too many frames; slow down"
        )
        effects: list[Effect] = [
            Reply(error_frame(code, message, client_id), code, limit)
        ]
        if is_flooding:
            effects.append(Close(CloseCode.RATE_LIMITED, code.value))
        return effects

    def on_confirmed(self, publish: Publish) -> list[Effect]:
        """The broker holds a published frame: record a join or a leave, give the answer."""
        effects: list[Effect] = []
        if publish.routing_key == KEY_ROOM_JOINED:
            self.rooms = self.rooms | {publish.room}
            effects.append(JoinRoom(publish.room))
        elif publish.routing_key == KEY_ROOM_LEFT:
            self.rooms = self.rooms - {publish.room}
            effects.append(LeaveRoom(publish.room))
        if publish.answer is not None:
            effects.append(Reply(publish.answer))
        return effects

    def on_publish_failed(self, publish: Publish) -> list[Effect]:
        """The broker did not confirm a published frame: nothing was accepted."""
        message = "the frame was not accepted; retry with the same id"
        if publish.routing_key == KEY_CONN_OPENED:
            self.identity = None
            message = "the connection could not be registered; send init again"
        return [
            Reply(
                error_frame(ErrorCode.UNAVAILABLE, message, publish.client_id),
                ErrorCode.UNAVAILABLE,
            )
        ]

    def acked_envelope(self, mids: list[str]) -> Publish:
        """The envelope that forwards acknowledgements of stored messages to the offline store."""
        assert self.uid is not None
        return Publish(
            KEY_ACK, envelopes.encode(envelopes.Acked(uid=self.uid, mids=mids))
        )

    def closed_envelope(self) -> Publish | None:
        """The envelope that removes this connection's presence and rooms, if it registered."""
        if self.uid is None:
            return None
        closed = envelopes.ConnClosed(
            uid=self.uid,
            conn_id=self.conn_id,
            gateway_id=self.gateway_id,
            rooms=sorted(self.rooms),
        )
        return Publish(KEY_CONN_CLOSED, envelopes.encode(closed))

    def _on_frame(
        self, frame: frames.AnyClientFrame, now_ms: int, may_fetch_keys: bool
    ) -> list[Effect]:
        match frame:
            case frames.Ping():
                return [
                    Reply(
                        _PONG
                        if frame.id is None
                        else frames.encode(frames.Pong(id=frame.id))
                    )
                ]
            case frames.Init():
                return self._on_init(frame, now_ms, may_fetch_keys)
        if self.identity is None:
            client_id = getattr(frame, "id", None)
            raise FrameRejected(
                ErrorCode.NOT_INITIALIZED,
                "send init with a valid token first",
                client_id,
            )
        match frame:
            case frames.Send():
                return [
                    outgoing(
                        frame,
                        self.identity,
                        self.rooms,
                        self._mids.next_mid,
                        now_ms,
                        conn_id=self.conn_id,
                        gateway_id=self.gateway_id,
                    )
                ]
            case frames.Ack():
                return [Acknowledge(tuple(frame.mids))] if frame.mids else []
            case frames.Join():
                prefix = self._public_room_prefix
                return room_joined(
                    frame,
                    self.identity,
                    self.rooms,
                    is_public=bool(prefix) and frame.room.startswith(prefix),
                    max_rooms=self._max_rooms,
                    conn_id=self.conn_id,
                    gateway_id=self.gateway_id,
                )
            case frames.Leave():
                return room_left(
                    frame,
                    self.identity,
                    self.rooms,
                    conn_id=self.conn_id,
                    gateway_id=self.gateway_id,
                )
            case frames.PresenceQuery():
                asked = presence_asked(
                    frame,
                    self.identity,
                    conn_id=self.conn_id,
                    gateway_id=self.gateway_id,
                )
                return [asked]
            case frames.HistoryQuery() | frames.Read() | frames.ConversationsQuery():
                uid, history_on = self.identity.uid, self._is_history_on
                return [
                    history_asked(frame, uid, self.conn_id, self.gateway_id, history_on)
                ]
            case frames.Refresh():
                return self._on_refresh(frame, self.identity, now_ms, may_fetch_keys)
        raise AssertionError(f"unhandled frame {frame!r}")

    def _on_init(
        self, frame: frames.Init, now_ms: int, may_fetch_keys: bool
    ) -> list[Effect]:
        if self.uid is not None:
            raise FrameRejected(
                ErrorCode.ALREADY_INITIALIZED, "this connection is already initialized"
            )
        try:
            identity = self._verifier.verify(frame.token, now_ms / 1000, may_fetch_keys)
        except FrameRejected as rejected:
            close_code = _INIT_CLOSE_CODES.get(rejected.code, CloseCode.INVALID_TOKEN)
            return [*self._rejected(rejected), Close(close_code, rejected.code.value)]
        if identity is Fetch.NEEDED:
            return [FetchKeys()]
        self.identity = identity
        self.since = frame.since if self._is_history_on else None
        opened = envelopes.ConnOpened(
            uid=identity.uid,
            conn_id=self.conn_id,
            gateway_id=self.gateway_id,
            since=self.since,
        )
        return [Publish(KEY_CONN_OPENED, envelopes.encode(opened))]

    def _on_refresh(
        self,
        frame: frames.Refresh,
        identity: Identity,
        now_ms: int,
        may_fetch_keys: bool,
    ) -> list[Effect]:
        """Take the new token's rights and expiry; refused, the old ones stay."""
        refreshed = self._verifier.refreshed(
            identity, frame.token, now_ms / 1000, may_fetch_keys, frame.id
        )
        if refreshed is Fetch.NEEDED:
            return [FetchKeys()]
        self.identity = refreshed
        return [Reply(frames.encode(frames.Refreshed(id=frame.id)))]

    def _uid_throttled(self, client_id: str) -> list[Effect]:
        code = ErrorCode.RATE_LIMITED
        message = "this uid sends too much across its connections; slow down"
        return [Reply(error_frame(code, message, client_id), code, Limit.UID)]

    def _rejected(self, rejected: FrameRejected) -> list[Effect]:
        return [
            Reply(
                error_frame(rejected.code, rejected.message, rejected.client_id),
                rejected.code,
            )
        ]
