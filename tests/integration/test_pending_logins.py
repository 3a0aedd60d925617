"""A gateway holding its cap of logins that wait for ``ready`` answers new handshakes 503.

The router is paused (SIGSTOP) so that logins wait for their ``ready`` for as long as the test
needs; real processes, two gateways, one of them capped.
"""

import pytest
from websockets.exceptions import InvalidStatus

from proto import env
from tests.support.clients import RawClient
from tests.support.stack import Gateway, Stack
from tests.support.timing import eventually
from tests.support.tokens import make_token

pytestmark = pytest.mark.integration

CAP = 2


async def start_login(stack: Stack, gateway: Gateway, uid: str) -> RawClient:
    """Open a connection and send its ``init``, without waiting for ``ready``."""
    client = await RawClient.open(gateway.url)
    stack.clients.append(client)
    await client.send_frame({"type": "init", "token": make_token(uid)})
    return client


async def refused_status(gateway: Gateway) -> InvalidStatus | None:
    """The refusal of a new handshake, or None (the handshake went through, and is closed)."""
    try:
        client = await RawClient.open(gateway.url)
    except InvalidStatus as refused:
        return refused
    await client.close()
    return None


async def accepted(gateway: Gateway) -> bool | None:
    return True if await refused_status(gateway) is None else None


async def test_handshakes_get_503_while_the_gateway_holds_its_pending_logins(
    stack: Stack,
) -> None:
    await stack.start_router()
    await stack.start_store()
    capped = await stack.start_gateway(**{env.MAX_PENDING_LOGINS: str(CAP)})
    other = await stack.start_gateway()
    bob = await stack.connect(other, uid="bob")
    router = stack.routers[0]

    router.pause()
    try:
        ann = await start_login(stack, capped, "ann")
        amy = await start_login(stack, capped, "amy")
        refusal = await eventually(lambda: refused_status(capped))
        assert refusal.response.status_code == 503
        assert refusal.response.headers["Retry-After"] == "1"
        event = await capped.process.wait_for_event("handshake_refused")
        assert event["pending_logins"] == CAP
        # The cap is the capped gateway's alone.
        assert await refused_status(other) is None
    finally:
        router.resume()

    # Both logins finish; the gateway takes handshakes again, and the users chat.
    await ann.expect("ready", within_s=10)
    await amy.expect("ready", within_s=10)
    assert await eventually(lambda: accepted(capped)) is True
    cid = await stack.connect(capped, uid="cid")
    sent = await ann.send_message("bob", "after the storm")
    await bob.expect_message(mid=sent["mid"])
    sent = await bob.send_message("cid", "and back")
    await cid.expect_message(mid=sent["mid"])


async def test_a_login_whose_client_left_no_longer_counts(stack: Stack) -> None:
    await stack.start_router()
    await stack.start_store()
    capped = await stack.start_gateway(**{env.MAX_PENDING_LOGINS: str(CAP)})
    router = stack.routers[0]

    router.pause()
    try:
        ann = await start_login(stack, capped, "ann")
        await start_login(stack, capped, "amy")
        await eventually(lambda: refused_status(capped))
        await ann.close()  # before its ready
        assert await eventually(lambda: accepted(capped)) is True
    finally:
        router.resume()
    dan = await stack.connect(capped, uid="dan")
    assert dan.uid == "dan"
