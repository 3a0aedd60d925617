"""Which token a connection holds, and whether a new one may replace it. Decides only.

``session.py`` asks ``Verifier.verify`` at ``init`` and ``Verifier.refreshed`` at ``refresh``;
the key is the deployment's secret or PEM public key, or the identity provider's key set
(``keyset.py``), which may first have to be fetched: then the answer is ``Fetch.NEEDED`` and
``ws.py`` fetches (``jwks.py``) before it asks again. The claims themselves are read in
``tokens.py``.
"""

from gateway.keyset import Fetch, KeySet
from gateway.tokens import Identity, TokenRules, key_id, verify_token
from proto.codes import ErrorCode
from proto.errors import FrameRejected


class Verifier:
    """Verifies the tokens of every connection of a gateway.

    Args:
        key: the HMAC secret or PEM public key, or the identity provider's key set.
        rules: the algorithm, audience, issuer and leeway tokens must meet.
    """

    def __init__(self, key: str | KeySet, rules: TokenRules) -> None:
        self._key = key
        self.rules = rules

    def verify(
        self, token: str, now_s: float, may_fetch_keys: bool
    ) -> Identity | Fetch:
        """The identity of a valid token, or ``Fetch.NEEDED`` to fetch the key set first.

        ``may_fetch_keys`` is False once the key set was fetched for this frame: a token whose
        key is still missing is then answered, never sent for another fetch.

        Raises:
            FrameRejected: as ``tokens.verify_token``; ``invalid_token`` for a ``kid`` the key
                set does not hold; ``unavailable`` when the key set could not be fetched.
        """
        key = self._key
        if isinstance(key, KeySet):
            found = key.lookup(key_id(token), now_s)
            if found is Fetch.NEEDED:
                if may_fetch_keys:
                    return Fetch.NEEDED
                raise FrameRejected(
                    ErrorCode.UNAVAILABLE,
                    "the identity provider's keys are being fetched; try again",
                )
            return verify_token(token, found, now_s, rules=self.rules)
        return verify_token(token, key, now_s, rules=self.rules)

    def refreshed(
        self,
        current: Identity,
        token: str,
        now_s: float,
        may_fetch_keys: bool,
        client_id: str,
    ) -> Identity | Fetch:
        """The identity a ``refresh`` brings: the new token's rights and expiry, same uid.

        Raises:
            FrameRejected: with ``client_id``: ``invalid_token`` for a token of another uid
                (``sub``), and whatever ``verify`` raises; the connection keeps ``current``.
        """
        try:
            verified = self.verify(token, now_s, may_fetch_keys)
        except FrameRejected as rejected:
            raise FrameRejected(rejected.code, rejected.message, client_id) from None
        if isinstance(verified, Identity) and verified.uid != current.uid:
            raise FrameRejected(
                ErrorCode.INVALID_TOKEN,
                "a refresh token must be for the connection's uid (sub)",
                client_id,
            )
        return verified

    def expires_s(self, identity: Identity) -> float:
        """When a connection of this identity is to be closed (``exp`` plus the leeway)."""
        return identity.expires_s + self.rules.leeway_s
