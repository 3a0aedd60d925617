"""Stable codes: error codes carried by ``error`` frames, and WebSocket close codes.

Codes are part of the contract: add new ones, never rename or reuse a value.
"""

from enum import IntEnum, StrEnum


class ErrorCode(StrEnum):
    """The ``code`` of an ``error`` frame (and of a backend command's error reply)."""

    INVALID_JSON = "invalid_json"
    """The text frame is not JSON (or not UTF-8)."""
    UNSUPPORTED_FRAME = "unsupported_frame"
    """A binary WebSocket frame: Switchboard speaks JSON text frames only."""
    UNKNOWN_TYPE = "unknown_type"
    """The frame has no ``type``, or one Switchboard does not know."""
    INVALID_FIELD = "invalid_field"
    """A field is missing, has the wrong type or is out of range; the message names it."""
    NOT_INITIALIZED = "not_initialized"
    """The frame needs a verified ``init`` first."""
    ALREADY_INITIALIZED = "already_initialized"
    """A second ``init`` on a connection that already has one."""
    INVALID_TOKEN = "invalid_token"
    """The token's signature, algorithm or claims are not valid (``aud``, ``iss``, a ``kid``
    the identity provider does not have); for a ``refresh``, also a token of another uid."""
    TOKEN_EXPIRED = "token_expired"
    """The token's ``exp`` has passed."""
    UNAVAILABLE = "unavailable"
    """The broker did not confirm the frame in time: nothing was accepted; retry, same id.
    Also for an ``init`` or ``refresh`` whose key the identity provider could not give."""
    RATE_LIMITED = "rate_limited"
    """Too many frames or bytes on this connection, or too many frames from this uid across all
    its connections (refused for the rest of the window); slow down."""
    INTERNAL_ERROR = "internal_error"
    """Something unexpected; it was logged. Retry with the same ``id``."""
    NOT_MEMBER = "not_member"
    """A group send from a uid that is not a member of the group."""
    FORBIDDEN = "forbidden"
    """The token does not allow it: a room join without the claim, a broadcast without the right;
    a client ``presence`` query where ``SWITCHBOARD_PRESENCE_POLICY`` is ``nobody``."""
    UNAUTHORIZED = "unauthorized"
    """HTTP API: no ``Authorization: Bearer <SWITCHBOARD_API_KEY>``, or another key."""
    TOO_LARGE = "too_large"
    """HTTP API: a body larger than ``SWITCHBOARD_MAX_FRAME_BYTES``."""
    METHOD_NOT_ALLOWED = "method_not_allowed"
    """HTTP API: anything but ``POST`` on ``/api/<command>``."""
    UNKNOWN_COMMAND = "unknown_command"
    """A backend command (``api.<command>``, ``POST /api/<command>``) that does not exist."""
    TOO_MANY_CONNECTIONS = "too_many_connections"
    """The uid holds ``SWITCHBOARD_MAX_CONNECTIONS_PER_UID`` connections already (all gateways)."""
    RECIPIENT_FULL = "recipient_full"
    """A later notice, after ``sent``: the recipient's offline store holds
    ``SWITCHBOARD_OFFLINE_MAX_ROWS_PER_UID`` rows, so this message (``mid``, for ``to``) was not
    kept for them. Sent to the sending connection, with the ``id`` of its ``send``."""
    NOT_FOUND = "not_found"
    """A ``read`` (or ``api.message``) names a mid that is not in that uid's inbox."""
    HISTORY_OFF = "history_off"
    """A ``history``, ``read`` or ``conversations`` frame, or a history command
    (``api.history``, ``api.conversations``, ``api.message``), where the deployment runs with
    ``SWITCHBOARD_HISTORY=off``: no history is kept to answer it."""


class CloseCode(IntEnum):
    """WebSocket close codes of the gateway (RFC 6455 section 7.4; 4000-4999 are Switchboard's)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    """The gateway is shutting down: reconnect (to any gateway) at once."""
    INVALID_PAYLOAD = 1007
    """A text frame that is not valid UTF-8 (closed by the WebSocket layer)."""
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    """A frame was larger than ``SWITCHBOARD_MAX_FRAME_BYTES``."""
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    """An ``init`` whose key could not be fetched from the identity provider
    (``SWITCHBOARD_JWKS_URL``): reconnect after a pause, with the same token."""
    INIT_TIMEOUT = 4001
    """No valid ``init`` within ``SWITCHBOARD_INIT_TIMEOUT_S``."""
    IDLE_TIMEOUT = 4002
    """No frame from the client within ``SWITCHBOARD_IDLE_TIMEOUT_S``."""
    INVALID_TOKEN = 4003
    """Terminal: the token is not valid; do not reconnect with it."""
    TOKEN_EXPIRED = 4004
    """The token's ``exp`` passed (plus ``SWITCHBOARD_JWT_LEEWAY_S``): at ``init``, or later
    on an open connection that got no ``refresh`` in time. Reconnect with a fresh token."""
    KICKED = 4005
    """Terminal: a backend kicked this uid."""
    SLOW_CONSUMER = 4006
    """The client read too slowly (``SWITCHBOARD_OUTBOX_FRAMES`` frames waited for it); its
    unacknowledged messages went to the offline store. A client that reads but does not
    acknowledge is not closed: past ``SWITCHBOARD_MAX_UNACKED_PER_CONNECTION`` its messages
    wait in the offline store instead."""
    RATE_LIMITED = 4007
    """Too many frames; reconnect after a pause."""
    TOO_MANY_CONNECTIONS = 4008
    """The uid holds ``SWITCHBOARD_MAX_CONNECTIONS_PER_UID`` connections already."""


TERMINAL_CLOSE_CODES = frozenset({CloseCode.INVALID_TOKEN, CloseCode.KICKED})
"""Close codes after which a client must not reconnect on its own."""
