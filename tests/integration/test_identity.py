"""Identity end to end: tokens of an identity provider through its JWKS (aud, iss, kid, a key
rotation, an outage), connections closed when their token expires, and ``refresh``."""

import asyncio
import math
import time

import pytest

from proto import env
from proto.codes import CloseCode, ErrorCode
from tests.support.clients import Frame, RawClient
from tests.support.idp import AUDIENCE, ISSUER, IdentityProvider, new_key
from tests.support.jwks_server import serve_jwks
from tests.support.stack import Stack
from tests.support.timing import eventually
from tests.support.tokens import make_token

pytestmark = pytest.mark.integration


async def jwks_stack(stack: Stack, url: str) -> Stack:
    stack.settings.update(
        {
            env.JWKS_URL: url,
            env.JWT_AUDIENCE: AUDIENCE,
            env.JWT_ISSUER: ISSUER,
            env.JWKS_TIMEOUT_S: "2",
            # Longer than the test: each gateway fetches for unknown kids once at most.
            env.JWKS_MIN_FETCH_INTERVAL_S: "600",
        }
    )
    return await stack.start(gateways=2)


async def refused(client: RawClient, token: str) -> tuple[str, int | None]:
    """Send ``init``; return the error code and the close code."""
    await client.send_frame({"type": "init", "token": token})
    error = await client.expect("error")
    return error["code"], await client.wait_closed()


async def test_keycloak_like_tokens_are_verified_by_kid_through_a_rotation(
    stack: Stack,
) -> None:
    idp = IdentityProvider()
    async with serve_jwks(idp) as url:
        await jwks_stack(stack, url)
        assert idp.fetches == 2  # each gateway fetched the key set at startup
        alice = await stack.connect(0, token=idp.token("alice"))
        bob = await stack.connect(1, token=idp.token("bob"))
        sent = await alice.send_message("bob", {"text": "hi"})
        await bob.expect_message(mid=sent["mid"])

        # The provider rotates: tokens name a kid the gateways have not seen.
        idp.rotate()
        carol = await stack.connect(1, token=idp.token("carol"))
        assert idp.fetches == 3
        sent = await carol.send_message("alice", {"text": "new key"})
        await alice.expect_message(mid=sent["mid"])

        # Tokens of another audience or issuer, or with kids nobody published, are refused;
        # the made-up kids do not make the gateway fetch the key set again.
        other_audience = idp.token("dan", aud="another-service")
        other_issuer = idp.token("dan", iss="https://evil.example/")
        stranger = new_key()
        made_up = [idp.token("eve", key=stranger) for _ in range(5)]
        for token in (other_audience, other_issuer, *made_up):
            client = await stack.connect(1)
            assert await refused(client, token) == (
                ErrorCode.INVALID_TOKEN,
                CloseCode.INVALID_TOKEN,
            )
        assert idp.fetches == 3
        sent = await bob.send_message("carol", {"text": "still here"})
        await carol.expect_message(mid=sent["mid"])


async def test_an_outage_of_the_provider_closes_no_healthy_connection(
    stack: Stack,
) -> None:
    idp = IdentityProvider()
    async with serve_jwks(idp) as url:
        await jwks_stack(stack, url)
        alice = await stack.connect(0, token=idp.token("alice"))
        bob = await stack.connect(1, token=idp.token("bob"))
        idp.is_down = True
        idp.rotate()
        # A new kid cannot be fetched: not the token's fault, so not terminal (1013).
        client = await stack.connect(0)
        assert await refused(client, idp.token("carol")) == (
            ErrorCode.UNAVAILABLE,
            CloseCode.TRY_AGAIN_LATER,
        )
        # Known keys still verify, and open connections go on.
        dan = await stack.connect(0, token=idp.token("dan", key=idp.keys[0]))
        sent = await alice.send_message("bob", {"text": "during the outage"})
        await bob.expect_message(mid=sent["mid"])
        sent = await dan.send_message("alice", {"text": "me too"})
        await alice.expect_message(mid=sent["mid"])
        assert "jwks_fetch_failed" in stack.gateways[0].process.output()


async def test_an_init_in_time_is_not_cut_while_its_key_is_fetched(
    stack: Stack,
) -> None:
    idp = IdentityProvider()
    async with serve_jwks(idp) as url:
        stack.settings.update(
            {
                env.JWKS_URL: url,
                env.JWT_AUDIENCE: AUDIENCE,
                env.JWT_ISSUER: ISSUER,
                env.JWKS_TIMEOUT_S: "30",
                env.INIT_TIMEOUT_S: "0.5",
            }
        )
        await stack.start(gateways=1)
        idp.rotate()  # a kid the gateway has not seen: the init waits for a fetch
        idp.answering = asyncio.Event()
        try:
            fetches = idp.fetches
            alice = await stack.connect(0)
            await alice.send_frame({"type": "init", "token": idp.token("alice")})

            async def fetching() -> bool | None:
                return True if idp.fetches > fetches else None

            await eventually(fetching)
            # Opened after alice and never initialized: once it is closed, alice's init
            # deadline has passed too.
            silent = await stack.connect(0)
            assert await silent.wait_closed() == CloseCode.INIT_TIMEOUT
        finally:
            idp.answering.set()
        ready = await alice.expect(lambda f: f.get("type") in ("ready", "error"))
        assert ready["type"] == "ready", ready
        assert alice.close_code is None


async def wait_until(unix_s: float) -> None:
    """Let wall time pass a token's expiry: the thing under test is time itself."""
    await asyncio.sleep(max(0.0, unix_s - time.time()))


def exp_of(seconds_from_now: float) -> int:
    """A token's ``exp`` at least this far ahead (``exp`` is whole seconds)."""
    return math.ceil(time.time() + seconds_from_now)


async def chat(sender: RawClient, recipient: RawClient, text: str) -> None:
    assert recipient.uid is not None
    sent = await sender.send_message(recipient.uid, {"text": text})
    message = await recipient.expect_message(mid=sent["mid"])
    await recipient.ack(message["mid"])


async def test_a_connection_is_closed_with_4004_when_its_token_expires(
    stack: Stack,
) -> None:
    await stack.start(gateways=2)
    bob = await stack.connect(0, uid="bob")
    carol = await stack.connect(1, uid="carol")
    # Time for alice's login and first message on a busy machine, before her token expires.
    expires = exp_of(4)
    alice = await stack.connect(0, token=make_token("alice", exp=expires))
    await chat(alice, carol, "before")
    assert await alice.wait_closed(within_s=7) == CloseCode.TOKEN_EXPIRED
    assert time.time() >= expires
    # Beside it, the others keep chatting, on both gateways.
    await chat(bob, carol, "after")
    await chat(carol, bob, "after too")
    assert bob.close_code is None
    assert carol.close_code is None


async def refresh(client: RawClient, token: str, client_id: str) -> Frame:
    await client.send_frame({"type": "refresh", "id": client_id, "token": token})
    return await client.expect(lambda f: f.get("id") == client_id)


async def test_a_refresh_extends_the_connection(stack: Stack) -> None:
    await stack.start(gateways=2)
    bob = await stack.connect(1, uid="bob")
    expires = exp_of(3)
    alice = await stack.connect(0, token=make_token("alice", exp=expires))
    answer = await refresh(alice, make_token("alice", ttl_s=600), "r1")
    assert answer == {"type": "refreshed", "id": "r1"}
    await wait_until(expires + 1.5)
    await chat(bob, alice, "still connected")
    await chat(alice, bob, "yes")
    assert alice.close_code is None


async def test_a_refused_refresh_keeps_the_old_expiry(stack: Stack) -> None:
    await stack.start(gateways=2)
    bob = await stack.connect(1, uid="bob")
    expires = exp_of(4)
    alice = await stack.connect(0, token=make_token("alice", exp=expires))
    other_sub = await refresh(alice, make_token("bob", ttl_s=600), "r1")
    forged = await refresh(alice, make_token("alice", "x" * 40, ttl_s=600), "r2")
    for answer in (other_sub, forged):
        assert answer["type"] == "error"
        assert answer["code"] == ErrorCode.INVALID_TOKEN
    await chat(bob, alice, "still valid")
    assert await alice.wait_closed(within_s=7) == CloseCode.TOKEN_EXPIRED
    assert time.time() >= expires
