"""One connection's protocol state: a client frame in, effects out. Decides, never awaits.

``ws.py`` feeds it the frames a client sends and performs the effects it returns: replies to the
client, publishes to the broker, a close. Time and mids come in as arguments.
"""

from dataclasses import dataclass

import msgspec

from gateway.tokens import verify_token
from proto import envelopes, frames, names
from proto.codes import CloseCode, ErrorCode
from proto.errors import FrameRejected
from proto.mids import MidFactory


@dataclass(frozen=True, slots=True)
class Reply:
    """Push this frame to the client."""

    frame: bytes
    error_code: ErrorCode | None = None
    """Set when the frame is an ``error``, for the log line."""


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish ``body`` to the inbound exchange and wait for the broker's confirm.

    Once confirmed, ``Session.on_confirmed`` says what to answer; if not, ``on_publish_failed``.
    """

    routing_key: str
    body: bytes
    mid: str = ""
    client_id: str | None = None


@dataclass(frozen=True, slots=True)
class Acknowledge:
    """The client acknowledged these mids."""

    mids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection with this code."""

    code: CloseCode
    reason: str


Effect = Reply | Publish | Acknowledge | Close

_PONG = frames.encode(frames.Pong())


def error_frame(code: ErrorCode, message: str, client_id: str | None = None) -> bytes:
    return frames.encode(frames.Error(code=code, message=message, id=client_id))


class Session:
    """The protocol state of one connection, from accept to close.

    Args:
        conn_id: this connection's id, unique across the system.
        gateway_id: the gateway holding the connection.
        jwt_secret: the key that verifies ``init`` tokens.
        mids: this process's mid factory.
    """

    def __init__(
        self, conn_id: str, gateway_id: str, jwt_secret: str, mids: MidFactory
    ) -> None:
        self.conn_id = conn_id
        self.gateway_id = gateway_id
        self._jwt_secret = jwt_secret
        self._mids = mids
        self.uid: str | None = None
        """Set by a verified ``init``; the only source of this connection's identity."""

    @property
    def is_initialized(self) -> bool:
        return self.uid is not None

    def on_text(self, text: str | bytes, now_ms: int) -> list[Effect]:
        """Decide what a text frame from the client leads to."""
        try:
            frame = self._decode(text)
            return self._on_frame(frame, now_ms)
        except FrameRejected as rejected:
            return self._rejected(rejected)

    def on_binary(self) -> list[Effect]:
        code = ErrorCode.UNSUPPORTED_FRAME
        return [
            Reply(
                error_frame(code, "binary frames are not supported; send JSON text"),
                code,
            )
        ]

    def on_confirmed(self, publish: Publish) -> list[Effect]:
        """The broker holds a published frame."""
        if publish.client_id is not None:
            return [
                Reply(frames.encode(frames.Sent(id=publish.client_id, mid=publish.mid)))
            ]
        return []

    def on_publish_failed(self, publish: Publish) -> list[Effect]:
        """The broker did not confirm a published frame: nothing was accepted."""
        message = "the message was not accepted; retry with the same id"
        if publish.routing_key == names.KEY_CONN_OPENED:
            self.uid = None
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
            names.KEY_ACK, envelopes.encode(envelopes.Acked(uid=self.uid, mids=mids))
        )

    def closed_envelope(self) -> Publish | None:
        """The envelope that removes this connection's presence, if it registered one."""
        if self.uid is None:
            return None
        closed = envelopes.ConnClosed(
            uid=self.uid, conn_id=self.conn_id, gateway_id=self.gateway_id
        )
        return Publish(names.KEY_CONN_CLOSED, envelopes.encode(closed))

    def _decode(self, text: str | bytes) -> frames.AnyClientFrame:
        try:
            return frames.decode_client_frame(text)
        except msgspec.ValidationError as exc:  # before DecodeError: it is a subclass
            probe = _probe(text)
            client_id = probe.id if isinstance(probe.id, str) else None
            if probe.type not in frames.CLIENT_FRAME_TYPES:
                raise FrameRejected(
                    ErrorCode.UNKNOWN_TYPE, f"unknown frame type: {exc}", client_id
                ) from exc
            raise FrameRejected(ErrorCode.INVALID_FIELD, str(exc), client_id) from exc
        except msgspec.DecodeError as exc:
            raise FrameRejected(
                ErrorCode.INVALID_JSON, f"not a JSON text frame: {exc}"
            ) from exc

    def _on_frame(self, frame: frames.AnyClientFrame, now_ms: int) -> list[Effect]:
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
                return self._on_init(frame, now_ms)
        if self.uid is None:
            client_id = getattr(frame, "id", None)
            raise FrameRejected(
                ErrorCode.NOT_INITIALIZED,
                "send init with a valid token first",
                client_id,
            )
        match frame:
            case frames.Send():
                return [self._outgoing(frame, self.uid, now_ms)]
            case frames.Ack():
                return [Acknowledge(tuple(frame.mids))] if frame.mids else []
        raise AssertionError(f"unhandled frame {frame!r}")

    def _on_init(self, frame: frames.Init, now_ms: int) -> list[Effect]:
        if self.uid is not None:
            raise FrameRejected(
                ErrorCode.ALREADY_INITIALIZED, "this connection is already initialized"
            )
        try:
            uid = verify_token(frame.token, self._jwt_secret, now_ms / 1000)
        except FrameRejected as rejected:
            close_code = (
                CloseCode.TOKEN_EXPIRED
                if rejected.code is ErrorCode.TOKEN_EXPIRED
                else CloseCode.INVALID_TOKEN
            )
            return [*self._rejected(rejected), Close(close_code, rejected.code.value)]
        self.uid = uid
        opened = envelopes.ConnOpened(
            uid=uid, conn_id=self.conn_id, gateway_id=self.gateway_id
        )
        return [Publish(names.KEY_CONN_OPENED, envelopes.encode(opened))]

    def _outgoing(self, frame: frames.Send, sender: str, now_ms: int) -> Publish:
        mid = self._mids.next_mid(now_ms)
        outgoing = envelopes.Outgoing(
            mid=mid,
            sender=sender,
            client_id=frame.id,
            to=frame.to,
            body=frame.body,
            ts=now_ms,
            gateway_id=self.gateway_id,
            conn_id=self.conn_id,
        )
        return Publish(
            names.KEY_SEND, envelopes.encode(outgoing), mid=mid, client_id=frame.id
        )

    def _rejected(self, rejected: FrameRejected) -> list[Effect]:
        return [
            Reply(
                error_frame(rejected.code, rejected.message, rejected.client_id),
                rejected.code,
            )
        ]


def _probe(text: str | bytes) -> frames.FrameProbe:
    try:
        return frames.probe_frame(text)
    except msgspec.DecodeError:  # not an object: no type, no id
        return frames.FrameProbe()
