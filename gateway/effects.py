"""What a session asks for: the effects ``Session`` returns and ``perform.py`` carries out.

Pure data, no decisions: a reply to push, a frame to publish and what to do once the broker
confirmed it, a room for the hub's index, acknowledged mids, a close, keys to fetch.
"""

from dataclasses import dataclass

from gateway.limits import Limit
from proto import frames
from proto.codes import CloseCode, ErrorCode


@dataclass(frozen=True, slots=True)
class Reply:
    """Push this frame to the client."""

    frame: bytes
    error_code: ErrorCode | None = None
    """Set when the frame is an ``error``, for the log line."""
    limit: Limit | None = None
    """For ``rate_limited``: the limit that refused the frame, for the log line and metric."""


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish ``body`` to the inbound exchange and wait for the broker's confirm.

    Once confirmed, ``Session.on_confirmed`` says what to answer; if not, ``on_publish_failed``.
    """

    routing_key: str
    body: bytes
    mid: str = ""
    client_id: str | None = None
    answer: bytes | None = None
    """The frame for the client once the broker confirmed; None when there is none to give
    here (the router answers a send or a presence query itself)."""
    room: str = ""
    """For a join or a leave: the room to record or drop once the broker confirmed."""


@dataclass(frozen=True, slots=True)
class JoinRoom:
    """Add the connection to the hub's index of ``room``, so that room deliveries reach it."""

    room: str


@dataclass(frozen=True, slots=True)
class LeaveRoom:
    """Remove the connection from the hub's index of ``room``."""

    room: str


@dataclass(frozen=True, slots=True)
class Acknowledge:
    """The client acknowledged these mids."""

    mids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection with this code."""

    code: CloseCode
    reason: str


@dataclass(frozen=True, slots=True)
class FetchKeys:
    """Fetch the identity provider's key set, then hand the same frame to the session again
    (``ws.py`` does both; always the only effect of its frame)."""


Effect = Reply | Publish | JoinRoom | LeaveRoom | Acknowledge | Close | FetchKeys


def error_frame(code: ErrorCode, message: str, client_id: str | None = None) -> bytes:
    return frames.encode(frames.Error(code=code, message=message, id=client_id))
