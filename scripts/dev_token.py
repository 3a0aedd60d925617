"""Print a development JWT for a uid (HS256, signed with SWITCHBOARD_JWT_SECRET).

Development only: in a deployment, a login service issues the tokens. Used by
``make token USER=alice``; the token is valid for 24 hours unless ``--ttl-s`` says otherwise.
(The file is not called ``token.py``: that name would shadow the standard library's
``token`` module for every import made by this script.)
"""

import argparse
import os
import sys
import time
from collections.abc import Sequence

import jwt

from proto import env
from proto.errors import SettingsError
from proto.rules import IDENTIFIER_CHARACTERS, MAX_ID_LENGTH, is_identifier

TTL_S = 24 * 60 * 60.0


def make_token(uid: str, secret: str, now_s: float, ttl_s: float = TTL_S) -> str:
    """Return a JWT whose ``sub`` is ``uid``, valid from ``now_s`` for ``ttl_s`` seconds."""
    claims = {"sub": uid, "iat": int(now_s), "exp": int(now_s + ttl_s)}
    return jwt.encode(claims, secret, algorithm="HS256")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print a development JWT for a uid.")
    parser.add_argument("uid", help="the user id the token is for (its sub claim)")
    parser.add_argument("--ttl-s", type=float, default=TTL_S, help="validity, seconds")
    args = parser.parse_args(argv)
    if not is_identifier(args.uid):
        parser.error(
            f"uid must be 1 to {MAX_ID_LENGTH} of the characters {IDENTIFIER_CHARACTERS}"
        )
    if not args.ttl_s > 0:
        parser.error("--ttl-s must be positive")
    try:
        # Development tokens: the Makefile's public secret is what they are signed with.
        secret = env.secret(os.environ, env.JWT_SECRET, allow_placeholder=True)
    except SettingsError as error:
        print(f"dev_token: {error}", file=sys.stderr)
        return 2
    print(make_token(args.uid, secret, time.time(), args.ttl_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
