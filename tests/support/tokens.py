"""JWTs for tests, signed like a deployment's login service would sign them."""

import time

import jwt

TEST_JWT_SECRET = "switchboard-test-secret-0123456789"


def make_token(
    uid: str | None,
    secret: str = TEST_JWT_SECRET,
    ttl_s: float = 600.0,
    algorithm: str = "HS256",
    **claims: object,
) -> str:
    payload: dict[str, object] = {"exp": int(time.time() + ttl_s), **claims}
    if uid is not None:
        payload["sub"] = uid
    return jwt.encode(payload, secret, algorithm=algorithm)
