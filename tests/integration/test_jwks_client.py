"""The gateway's JWKS client against a local HTTP server: one fetch at a time, large key sets,
refusals, and an outage that keeps the keys held."""

import asyncio

import jwt
import pytest

from gateway import jwks as jwks_module
from gateway.jwks import open_jwks
from gateway.keyset import KeySet
from tests.support.idp import IdentityProvider, new_key
from tests.support.jwks_server import serve_jwks
from tests.support.timing import scaled

pytestmark = pytest.mark.integration


async def test_concurrent_fetches_share_one_request_and_a_large_set_is_read_whole() -> (
    None
):
    idp = IdentityProvider()
    for _ in range(150):  # about 100 KB of keys: several chunks
        idp.keys.append(new_key())
    async with serve_jwks(idp) as url:
        keyset = KeySet("RS256", 600.0)
        async with open_jwks(url, keyset, scaled(5)) as client:
            assert idp.fetches == 1
            assert len(keyset.kids) == 151
            await asyncio.gather(*(client.fetch(is_scheduled=True) for _ in range(20)))
            assert idp.fetches == 2
            # Within the interval, an unknown kid starts no fetch.
            keyset.fetch_started(0.0)
            keyset.fetched(idp.jwks())
            await client.fetch()
            await client.fetch()
            assert idp.fetches == 3
            await client.fetch()
            assert idp.fetches == 3


async def test_an_outage_keeps_the_keys_held_and_a_recovery_replaces_them() -> None:
    idp = IdentityProvider()
    async with serve_jwks(idp) as url:
        keyset = KeySet("RS256", 600.0)
        async with open_jwks(url, keyset, scaled(5)) as client:
            first = idp.current
            idp.is_down = True
            idp.rotate(keep_old=False)
            await client.fetch(is_scheduled=True)
            assert keyset.has_failed
            assert keyset.kids == (first.kid,)
            assert isinstance(keyset.lookup(first.kid, 0.0), jwt.PyJWK)
            idp.is_down = False
            await client.fetch(is_scheduled=True)
            assert not keyset.has_failed
            assert keyset.kids == (idp.current.kid,)


async def test_a_document_over_the_limit_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jwks_module, "MAX_JWKS_BYTES", 100)
    idp = IdentityProvider()
    async with serve_jwks(idp) as url:
        keyset = KeySet("RS256", 600.0)
        async with open_jwks(url, keyset, scaled(5)):
            assert keyset.has_failed
            assert keyset.kids == ()
