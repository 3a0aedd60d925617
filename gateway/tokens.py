"""JWT verification for ``init`` and ``refresh``: who the connection is (``sub``), what it may do
and until when (``exp``), nothing else.

Pure: the caller passes the current time and the key, so that expiry is decided here without
reading a clock; keys fetched from an identity provider are kept in ``keyset.py``, and the
``kid`` that picks one is read here (``key_id``).

Claims read here, besides the registered ``exp`` and ``nbf`` (finite numbers: a NaN or an
infinite one makes the token invalid), ``aud`` and ``iss`` (checked against the configured
audience and issuer; a token with an ``aud`` is refused when no audience is configured, as RFC
7519 section 4.1.3 asks):

- ``sub`` (required): the uid, an identifier of ``proto/rules.py`` (else ``invalid_token``).
- ``rooms`` (optional): a list of glob patterns (``fnmatch.fnmatchcase``: ``*``, ``?``, ``[...]``,
  case-sensitive) of the rooms the connection may join.
- ``broadcast`` (optional, default false): whether the connection may send to everyone.
"""

import math
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
    expires_s: float = math.inf
    """The token's ``exp`` (Unix seconds): the connection is closed once it passes (plus the
    leeway), unless a ``refresh`` brings a later one."""

    def may_join(self, room: str) -> bool:
        """Tell whether a pattern of the ``rooms`` claim matches ``room``."""
        return any(fnmatchcase(room, pattern) for pattern in self.room_patterns)


@dataclass(frozen=True, slots=True)
class TokenRules:
    """What a token must hold besides a good signature: the deployment's identity provider."""

    algorithm: str = DEFAULT_ALGORITHM
    """The only algorithm accepted (``SWITCHBOARD_JWT_ALGORITHM``)."""
    audience: tuple[str, ...] = ()
    """Accepted ``aud`` values, one of which the token must hold (``SWITCHBOARD_JWT_AUDIENCE``);
    empty: a token must hold no ``aud``."""
    issuer: str | None = None
    """The ``iss`` a token must hold (``SWITCHBOARD_JWT_ISSUER``); None: not checked."""
    leeway_s: float = 0.0
    """Clock skew allowed on ``exp`` and ``nbf`` (``SWITCHBOARD_JWT_LEEWAY_S``)."""


def key_id(token: str) -> str | None:
    """The ``kid`` of the token's header, unverified: it only picks the key that verifies.

    Raises:
        FrameRejected: ``invalid_token`` when the header cannot be read or its ``kid`` is
            not a string.
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise FrameRejected(
            ErrorCode.INVALID_TOKEN, f"invalid token: {type(exc).__name__}"
        ) from exc
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise FrameRejected(ErrorCode.INVALID_TOKEN, "kid must be a string")
    return kid


def verify_token(
    token: str,
    key: str | jwt.PyJWK,
    now_s: float,
    algorithm: str = DEFAULT_ALGORITHM,
    rules: TokenRules | None = None,
) -> Identity:
    """Return the identity of a valid token.

    Args:
        token: the compact JWT from the ``init`` or ``refresh`` frame.
        key: the HMAC secret (``SWITCHBOARD_JWT_SECRET``), the PEM public key, or the key of
            the identity provider's key set that the token's ``kid`` names.
        now_s: the current Unix time in seconds.
        algorithm: the only algorithm accepted (``SWITCHBOARD_JWT_ALGORITHM``), one of
            ``ALGORITHMS``; a token signed with any other, ``none`` included, is refused.
            Used when ``rules`` is None; otherwise ``rules.algorithm`` is.
        rules: algorithm, audience, issuer and leeway; None: ``TokenRules(algorithm)``.

    Raises:
        FrameRejected: ``token_expired`` when ``exp`` has passed (or ``nbf`` is ahead) by more
            than the leeway; ``invalid_token`` for anything else: bad signature, another
            algorithm (``none`` included), no ``exp``, an ``exp`` or ``nbf`` that is not a
            finite number, an ``aud`` or ``iss`` other than the configured ones (or any
            ``aud`` where none is configured), a ``sub`` that is missing or not a usable uid,
            a ``rooms`` claim that is not a list of strings, a ``broadcast`` claim that is
            not a boolean.
    """
    rules = rules if rules is not None else TokenRules(algorithm)
    try:
        claims: Mapping[str, object] = jwt.decode(
            token,
            key,
            algorithms=[rules.algorithm],
            audience=list(rules.audience) or None,
            issuer=rules.issuer,
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
    # json.loads reads NaN and Infinity: an exp of NaN would never pass.
    if not isinstance(expires, int | float) or not _is_finite(expires):
        raise FrameRejected(ErrorCode.INVALID_TOKEN, "exp must be a finite number")
    if not isinstance(not_before, int | float) or not _is_finite(not_before):
        raise FrameRejected(ErrorCode.INVALID_TOKEN, "nbf must be a finite number")
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
    if expires + rules.leeway_s <= now_s or not_before - rules.leeway_s > now_s:
        raise FrameRejected(
            ErrorCode.TOKEN_EXPIRED, "the token is expired or not yet valid"
        )
    return Identity(uid, tuple(rooms), may_broadcast, float(expires))


def _is_finite(number: float) -> bool:
    # bool is an int: "exp": true is a minting bug, not the second 1 of 1970.
    return not isinstance(number, bool) and math.isfinite(number)
