"""JWT verification for ``init``: who the connection is (``sub``) and what it may do, nothing else.

Pure: the caller passes the current time, so that expiry is decided here without reading a clock.

Claims read here, besides the registered ``exp`` and ``nbf``:

- ``sub`` (required): the uid, an identifier of ``proto/rules.py`` (else ``invalid_token``).
- ``rooms`` (optional): a list of glob patterns (``fnmatch.fnmatchcase``: ``*``, ``?``, ``[...]``,
  case-sensitive) of the rooms the connection may join.
- ``broadcast`` (optional, default false): whether the connection may send to everyone.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

import jwt

from proto.codes import ErrorCode
from proto.errors import FrameRejected
from proto.rules import IDENTIFIER_CHARACTERS, MAX_ID_LENGTH, is_identifier

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
"""Verified with ``SWITCHBOARD_JWT_SECRET``."""
PUBLIC_KEY_ALGORITHMS = ("RS256", "ES256")
"""Verified with the PEM public key in ``SWITCHBOARD_JWT_PUBLIC_KEY`` (needs ``cryptography``)."""
ALGORITHMS = HMAC_ALGORITHMS + PUBLIC_KEY_ALGORITHMS
DEFAULT_ALGORITHM = "HS256"
ROOMS_CLAIM = "rooms"
BROADCAST_CLAIM = "broadcast"


@dataclass(frozen=True, slots=True)
class Identity:
    """What a verified token says about its connection."""

    uid: str
    room_patterns: tuple[str, ...] = ()
    """Glob patterns of the rooms this connection may join (the ``rooms`` claim)."""
    may_broadcast: bool = False
    """Whether this connection may send to every connected user (the ``broadcast`` claim)."""

    def may_join(self, room: str) -> bool:
        """Tell whether a pattern of the ``rooms`` claim matches ``room``."""
        return any(fnmatchcase(room, pattern) for pattern in self.room_patterns)


def verify_token(
    token: str, key: str, now_s: float, algorithm: str = DEFAULT_ALGORITHM
) -> Identity:
    """Return the identity of a valid token.

    Args:
        token: the compact JWT from the ``init`` frame.
        key: the HMAC secret (``SWITCHBOARD_JWT_SECRET``) or the PEM public key.
        now_s: the current Unix time in seconds.
        algorithm: the only algorithm accepted (``SWITCHBOARD_JWT_ALGORITHM``), one of
            ``ALGORITHMS``; a token signed with any other, ``none`` included, is refused.

    Raises:
        FrameRejected: ``token_expired`` when ``exp`` has passed (or ``nbf`` is ahead),
            ``invalid_token`` for anything else: bad signature, another algorithm (``none``
            included), no ``exp``, a ``sub`` that is missing or not a usable uid, a ``rooms``
            claim that is not a list of strings, a ``broadcast`` claim that is not a boolean.
    """
    try:
        claims: Mapping[str, object] = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            # Time claims are checked below against the caller's clock.
            options={
                "require": ["exp", "sub"],
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except jwt.InvalidTokenError as exc:
        raise FrameRejected(
            ErrorCode.INVALID_TOKEN, f"invalid token: {type(exc).__name__}"
        ) from exc
    uid = claims["sub"]
    if not isinstance(uid, str) or not is_identifier(uid):
        # The uid names Redis keys and offline rows: it follows proto/rules.py.
        raise FrameRejected(
            ErrorCode.INVALID_TOKEN,
            f"sub must be 1 to {MAX_ID_LENGTH} of the characters {IDENTIFIER_CHARACTERS}",
        )
    expires, not_before = claims["exp"], claims.get("nbf", 0)
    if not isinstance(expires, int | float) or not isinstance(not_before, int | float):
        raise FrameRejected(ErrorCode.INVALID_TOKEN, "exp and nbf must be numbers")
    rooms = claims.get(ROOMS_CLAIM, [])
    if not isinstance(rooms, list) or not all(isinstance(p, str) for p in rooms):
        raise FrameRejected(
            ErrorCode.INVALID_TOKEN, f"{ROOMS_CLAIM} must be a list of strings"
        )
    may_broadcast = claims.get(BROADCAST_CLAIM, False)
    # bool, not truthy: "false" or 1 in a token is a minting bug, not a grant.
    if not isinstance(may_broadcast, bool):
        raise FrameRejected(
            ErrorCode.INVALID_TOKEN, f"{BROADCAST_CLAIM} must be true or false"
        )
    if expires <= now_s or not_before > now_s:
        raise FrameRejected(
            ErrorCode.TOKEN_EXPIRED, "the token is expired or not yet valid"
        )
    return Identity(uid, tuple(rooms), may_broadcast)
