"""The JWKS endpoint of a test identity provider, on a free loopback port."""

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from tests.support.idp import IdentityProvider


@asynccontextmanager
async def serve_jwks(provider: IdentityProvider) -> AsyncIterator[str]:
    """Serve the provider's JWKS on a free loopback port; yields its URL."""

    async def certs(request: web.Request) -> web.Response:
        provider.fetches += 1
        if provider.answering is not None:
            await provider.answering.wait()
        if provider.is_down:
            return web.Response(status=503)
        return web.json_response(provider.jwks())

    app = web.Application()
    app.router.add_get("/certs", certs)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))  # a free port, held from now on
    port = listening.getsockname()[1]
    try:
        await web.SockSite(runner, listening).start()
        yield f"http://127.0.0.1:{port}/certs"
    finally:
        await runner.cleanup()
        listening.close()
