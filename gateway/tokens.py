"""JWT verification for ``init``: the uid is the verified token's ``sub``, and nothing else.

Pure: the caller passes the current time, so that expiry is decided here without reading a clock.
"""

from collections.abc import Mapping

import jwt

from proto.codes import ErrorCode
from proto.errors import FrameRejected
from proto.frames import MAX_ID_LENGTH

ALGORITHMS = ("HS256",)


def verify_token(token: str, secret: str, now_s: float) -> str:
    """Return the uid of a valid token.

    Args:
        token: the compact JWT from the ``init`` frame.
        secret: the HS256 key (``SWITCHBOARD_JWT_SECRET``).
        now_s: the current Unix time in seconds.

    Raises:
        FrameRejected: ``token_expired`` when ``exp`` has passed (or ``nbf`` is ahead),
            ``invalid_token`` for anything else: bad signature, another algorithm (``none``
            included), no ``exp``, a ``sub`` that is missing or not a usable uid.
    """
    try:
        claims: Mapping[str, object] = jwt.decode(
            token,
            secret,
            algorithms=list(ALGORITHMS),
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
    if not isinstance(uid, str) or not 0 < len(uid) <= MAX_ID_LENGTH:
        raise FrameRejected(
            ErrorCode.INVALID_TOKEN,
            f"sub must be a string of 1 to {MAX_ID_LENGTH} characters",
        )
    expires, not_before = claims["exp"], claims.get("nbf", 0)
    if not isinstance(expires, int | float) or not isinstance(not_before, int | float):
        raise FrameRejected(ErrorCode.INVALID_TOKEN, "exp and nbf must be numbers")
    if expires <= now_s or not_before > now_s:
        raise FrameRejected(
            ErrorCode.TOKEN_EXPIRED, "the token is expired or not yet valid"
        )
    return uid
