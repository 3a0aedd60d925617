"""A Keycloak-like identity provider for tests: RS256 / ES256 keys with a ``kid``, their JWKS
document, tokens with ``aud`` and ``iss``, key rotation. ``jwks_server.py`` serves it."""

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ISSUER = "https://idp.example/realms/switchboard"
AUDIENCE = "switchboard"


@dataclass
class SigningKey:
    kid: str
    algorithm: str
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    def public_jwk(self) -> dict[str, object]:
        algorithm = jwt.get_algorithm_by_name(self.algorithm)
        jwk = json.loads(algorithm.to_jwk(self.private.public_key()))
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.algorithm}


def new_key(algorithm: str = "RS256") -> SigningKey:
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if algorithm == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    return SigningKey(uuid.uuid4().hex[:16], algorithm, private)


@dataclass
class IdentityProvider:
    """Signs tokens with its newest key and publishes the keys it still holds."""

    algorithm: str = "RS256"
    issuer: str = ISSUER
    audience: str = AUDIENCE
    keys: list[SigningKey] = field(default_factory=list)
    is_down: bool = False
    """While True, its JWKS endpoint answers 503 (``jwks_server.py``)."""
    fetches: int = 0
    """Requests its JWKS endpoint got, answered or not."""
    answering: asyncio.Event | None = None
    """When set to an event, its JWKS endpoint answers once the event is set."""

    def __post_init__(self) -> None:
        if not self.keys:
            self.keys.append(new_key(self.algorithm))

    @property
    def current(self) -> SigningKey:
        return self.keys[-1]

    def rotate(self, keep_old: bool = True) -> SigningKey:
        """Sign with a new key from now on; the old one stays published unless told."""
        key = new_key(self.algorithm)
        self.keys = [*self.keys, key] if keep_old else [key]
        return key

    def jwks(self) -> dict[str, list[dict[str, object]]]:
        return {"keys": [key.public_jwk() for key in self.keys]}

    def token(
        self,
        uid: str,
        ttl_s: float = 600.0,
        key: SigningKey | None = None,
        **claims: object,
    ) -> str:
        """A token like Keycloak's: ``aud``, ``iss``, ``iat``, ``exp``, ``kid`` in the header."""
        key = key or self.current
        now = time.time()
        payload: dict[str, object] = {
            "sub": uid,
            "iss": self.issuer,
            "aud": [self.audience, "account"],
            "iat": int(now),
            "exp": int(now + ttl_s),
            "azp": "web",
            **claims,
        }
        return jwt.encode(
            payload, key.private, algorithm=key.algorithm, headers={"kid": key.kid}
        )
