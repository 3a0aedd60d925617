"""The identity provider's signing keys, by ``kid``, and when to fetch them again. Decides only.

``jwks.py`` fetches the key set (``SWITCHBOARD_JWKS_URL``) and records here what it got; the
sessions look keys up here while they verify ``init`` and ``refresh`` tokens. A token that
names a ``kid`` not held (the provider rotated its keys) asks for a fetch, but such tokens
start at most one fetch per ``min_fetch_interval_s``, so that tokens with made-up kids cannot
hammer the provider; tokens that arrive while a fetch is under way wait for that one. The
scheduled fetches (every ``SWITCHBOARD_JWKS_REFRESH_S``) do not count: a rotation just after
one is still fetched at once. A fetch that fails
keeps the keys held: connections already open need no key, and tokens of known kids still
verify during a provider's outage.

Time comes in as an argument: nothing here reads a clock.
"""

import enum
from collections.abc import Mapping
from dataclasses import dataclass

import jwt

from proto.codes import ErrorCode
from proto.errors import FrameRejected


class Fetch(enum.Enum):
    """The lookup's answer when the key set is to be fetched (or is being fetched) first."""

    NEEDED = "needed"


@dataclass(frozen=True, slots=True)
class KeySetState:
    """What the key set knows, for the log line of a fetch."""

    kids: tuple[str, ...]
    has_failed: bool


class KeySet:
    """The keys of one JWKS URL, by ``kid``.

    Args:
        algorithm: the one algorithm tokens may use; keys for another are left out.
        min_fetch_interval_s: the least time between the starts of two fetches that an
            unknown ``kid`` asks for.
    """

    def __init__(self, algorithm: str, min_fetch_interval_s: float) -> None:
        self.algorithm = algorithm
        self.min_fetch_interval_s = min_fetch_interval_s
        self._keys: dict[str, jwt.PyJWK] = {}
        self._next_fetch_s = -float("inf")
        """Before this, an unknown kid starts no fetch."""
        self.is_fetching = False
        """A fetch is under way: lookups of unknown kids wait for it instead of starting one."""
        self.has_failed = False
        """The last fetch failed (or none succeeded yet after one failed)."""

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(sorted(self._keys))

    def lookup(self, kid: str | None, now_s: float) -> jwt.PyJWK | Fetch:
        """The key that ``kid`` names, or ``Fetch.NEEDED`` when the set must be fetched first.

        A token without a ``kid`` is verified with the only key when the set holds exactly one.

        Raises:
            FrameRejected: ``invalid_token`` for a kid the set does not hold and no fetch may
                look for now; ``unavailable`` instead when the last fetch failed (the provider
                may hold it: try again later).
        """
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        key = self._keys.get(kid) if kid is not None else None
        if key is not None:
            return key
        if self.is_fetching or (kid is not None and now_s >= self._next_fetch_s):
            return Fetch.NEEDED
        if self.has_failed:
            raise FrameRejected(
                ErrorCode.UNAVAILABLE,
                "the identity provider's keys could not be fetched; try again later",
            )
        raise FrameRejected(
            ErrorCode.INVALID_TOKEN,
            "the token names no key of the identity provider"
            if kid is not None
            else "the token names no key (kid) and the provider has several",
        )

    def may_fetch(self, now_s: float) -> bool:
        """Whether a fetch for an unknown kid may start now."""
        return not self.is_fetching and now_s >= self._next_fetch_s

    def fetch_started(self, now_s: float, is_scheduled: bool = False) -> None:
        """A fetch starts: for an unknown kid (the interval starts over), or on schedule."""
        self.is_fetching = True
        if not is_scheduled:
            self._next_fetch_s = now_s + self.min_fetch_interval_s

    def fetched(self, jwks: Mapping[str, object]) -> KeySetState:
        """Replace the keys with those of a fetched JWKS document (RFC 7517 section 5).

        Keys without a ``kid``, for another algorithm, not for signatures (``use`` other than
        ``sig``) or unusable are left out; keys of the old set that are gone are dropped.

        Raises:
            ValueError: the document is not a key set (no ``keys`` list); the keys held stay.
        """
        self.is_fetching = False
        entries = jwks.get("keys")
        if not isinstance(entries, list):
            self.has_failed = True
            raise ValueError("a JWKS document holds a list of keys")
        keys: dict[str, jwt.PyJWK] = {}
        for entry in entries:
            key = _usable_key(entry, self.algorithm)
            if key is not None and key.key_id is not None:
                keys[key.key_id] = key
        self._keys = keys
        self.has_failed = False
        return KeySetState(self.kids, has_failed=False)

    def fetch_failed(self) -> KeySetState:
        """The fetch failed: keep the keys held."""
        self.is_fetching = False
        self.has_failed = True
        return KeySetState(self.kids, has_failed=True)


def _usable_key(entry: object, algorithm: str) -> jwt.PyJWK | None:
    if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
        return None
    if entry.get("alg", algorithm) != algorithm:
        return None
    try:
        # Without "alg", PyJWK infers it from the key type (RSA: RS256, EC P-256: ES256).
        key = jwt.PyJWK(entry, algorithm)
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError):
        return None
    return key if key.algorithm_name == algorithm else None
