"""Security settings end to end: no token, key or secret in any log line; the configured
JWT algorithm only."""

import aiohttp
import pytest

from proto import env
from proto.codes import CloseCode, ErrorCode
from tests.support.clients import RawClient
from tests.support.stack import Stack, free_port
from tests.support.timing import scaled
from tests.support.tokens import TEST_JWT_SECRET, make_token

pytestmark = pytest.mark.integration

API_KEY = "security-test-api-key-0123456789abcdef"
OTHER_SECRET = "another-secret-that-signs-forged-tokens-0123"


async def test_no_token_key_or_secret_appears_in_any_log_line(stack: Stack) -> None:
    http_port = free_port()
    stack.settings[env.LOG_LEVEL] = "debug"
    await stack.start(gateways=1)
    gateway = await stack.start_gateway(
        **{env.HTTP_PORT: str(http_port), env.API_KEY: API_KEY}
    )
    token = make_token("ann")
    ann = await stack.connect(gateway, token=token)
    bob = await stack.connect(gateway, uid="bob")
    sent = await ann.send_message("bob", {"text": "hello"})
    await bob.expect_message(mid=sent["mid"])

    forged = make_token("mallory", OTHER_SECRET)
    mallory = await stack.connect(gateway)
    await mallory.send_frame({"type": "init", "token": forged})
    assert (await mallory.expect("error"))["code"] == ErrorCode.INVALID_TOKEN
    assert await mallory.wait_closed() == CloseCode.INVALID_TOKEN

    timeout = aiohttp.ClientTimeout(total=scaled(15))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        url = f"http://127.0.0.1:{http_port}/api/send"
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with session.post(
            url, json={"to": "bob", "body": "from a backend"}, headers=headers
        ) as response:
            assert response.status == 200, await response.text()
        wrong = {"Authorization": f"Bearer {API_KEY[::-1]}"}
        async with session.post(url, json={}, headers=wrong) as response:
            assert response.status == 401
    await bob.expect_message(body="from a backend")

    output = stack.output()
    for secret in (
        token,
        forged,
        API_KEY,
        API_KEY[::-1],
        TEST_JWT_SECRET,
        OTHER_SECRET,
    ):
        assert secret not in output
    # Nor their signature parts, which would identify a token just as well.
    for signed in (token, forged):
        assert signed.rsplit(".", 1)[1] not in output


async def test_only_the_configured_algorithm_is_accepted(stack: Stack) -> None:
    long_secret = TEST_JWT_SECRET * 2
    stack.settings.update({env.JWT_ALGORITHM: "HS512", env.JWT_SECRET: long_secret})
    await stack.start(gateways=1)
    ann = await stack.connect(
        0, token=make_token("ann", long_secret, algorithm="HS512")
    )
    assert ann.uid == "ann"
    for refused in (
        make_token("eve", long_secret, algorithm="HS256"),
        make_token("eve", long_secret, algorithm="HS384"),
    ):
        client = await stack.connect(0)
        await client.send_frame({"type": "init", "token": refused})
        assert (await client.expect("error"))["code"] == ErrorCode.INVALID_TOKEN
        assert await client.wait_closed() == CloseCode.INVALID_TOKEN


async def test_compression_is_negotiated_only_when_configured(stack: Stack) -> None:
    await stack.start(gateways=1)
    deflating = await stack.start_gateway(**{env.COMPRESSION: "deflate"})
    # Both clients offer permessage-deflate, as browsers do.
    plain = await RawClient.open(stack.gateways[0].url, compression="deflate")
    compressed = await RawClient.open(deflating.url, compression="deflate")
    stack.clients += [plain, compressed]
    for client, expected in ((plain, False), (compressed, True)):
        assert client.websocket.response is not None
        extensions = client.websocket.response.headers.get(
            "Sec-WebSocket-Extensions", ""
        )
        assert ("permessage-deflate" in extensions) is expected
        await client.init(make_token("carl"))
        assert client.uid == "carl"
