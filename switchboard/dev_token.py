"""Development JWTs: HS256, signed with ``SWITCHBOARD_JWT_SECRET``, with ``sub`` and ``exp``.

Development only: in a deployment, a login service issues the tokens. ``switchboard token``,
``make token`` (scripts/dev_token.py) and the web page's ``POST /dev/token`` use it.
"""

import jwt

TTL_S = 24 * 60 * 60.0
"""How long a development token is valid, unless asked otherwise."""


def make_token(uid: str, secret: str, now_s: float, ttl_s: float = TTL_S) -> str:
    """Return a JWT whose ``sub`` is ``uid``, valid from ``now_s`` for ``ttl_s`` seconds."""
    claims = {"sub": uid, "iat": int(now_s), "exp": int(now_s + ttl_s)}
    return jwt.encode(claims, secret, algorithm="HS256")
