"""Fetching the identity provider's key set (``SWITCHBOARD_JWKS_URL``) over HTTP, off the hot path.

What the keys are and when a fetch may start is decided in ``keyset.py``; this module does the
awaiting, with aiohttp (never a blocking call on the event loop), one fetch at a time: callers
that ask while a fetch is under way wait for that one. A failed fetch is logged and keeps the
keys held, so an outage of the provider closes no connection and refuses only tokens whose key
was never seen.
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import aiohttp
import structlog

from gateway.keyset import KeySet

log = structlog.get_logger()

MAX_JWKS_BYTES = 1_048_576
"""A key set is a few KiB; more is not one."""


class JwksClient:
    """Keeps a ``KeySet`` filled from one URL.

    Args:
        url: the JWKS URL.
        keyset: the keys the sessions look up.
        session: the aiohttp session the fetches use.
        timeout_s: deadline of one fetch.
        clock: Unix seconds, the clock the sessions pass to the key set's lookups.
    """

    def __init__(
        self,
        url: str,
        keyset: KeySet,
        session: aiohttp.ClientSession,
        timeout_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = url
        self.keyset = keyset
        self._session = session
        self._timeout_s = timeout_s
        self._clock = clock
        self._fetching: asyncio.Task[None] | None = None
        """The fetch under way, which every caller waits for; owned here, cancelled by close."""

    async def fetch(self, *, is_scheduled: bool = False) -> None:
        """Fetch the key set, or wait for the fetch under way; never raises but cancellation.

        Without ``is_scheduled`` (a token named an unknown ``kid``), no fetch starts within
        ``min_fetch_interval_s`` of the last one: the key set then answers the token itself.
        """
        if self._fetching is None:
            now_s = self._clock()
            if not (is_scheduled or self.keyset.may_fetch(now_s)):
                return
            self.keyset.fetch_started(now_s, is_scheduled)
            self._fetching = asyncio.create_task(self._fetch_once())
        # Shielded: a connection that closes while it waits must not cancel everyone's fetch.
        await asyncio.shield(self._fetching)

    async def run_refresh(self, interval_s: float) -> None:
        """Fetch the key set every ``interval_s``, so that keys the provider dropped go."""
        while True:
            await asyncio.sleep(interval_s)  # a schedule, not a synchronisation
            await self.fetch(is_scheduled=True)

    async def close(self) -> None:
        fetching, self._fetching = self._fetching, None
        if fetching is not None:
            fetching.cancel()
            await asyncio.wait([fetching])

    async def _fetch_once(self) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                document = await self._get()
            state = self.keyset.fetched(document)
        except Exception as exc:  # any failure keeps the keys held
            state = self.keyset.fetch_failed()
            log.warning(
                "jwks_fetch_failed",
                error=type(exc).__name__,
                kids=len(state.kids),
            )
        else:
            log.info("jwks_fetched", kids=list(state.kids))
        finally:
            self._fetching = None

    async def _get(self) -> dict[str, object]:
        async with self._session.get(
            self._url, headers={"Accept": "application/json"}
        ) as response:
            response.raise_for_status()
            body = bytearray()
            async for chunk in response.content.iter_chunked(65536):
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError(f"a JWKS document over {MAX_JWKS_BYTES} bytes")
        document = json.loads(body)
        if not isinstance(document, dict):
            raise ValueError("a JWKS document is a JSON object")
        return document


@asynccontextmanager
async def open_jwks(
    url: str, keyset: KeySet, timeout_s: float
) -> AsyncIterator[JwksClient]:
    """A client with its own HTTP session; the first fetch is done (or failed) on entry."""
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout_s)
    ) as session:
        client = JwksClient(url, keyset, session, timeout_s)
        try:
            await client.fetch(is_scheduled=True)
            yield client
        finally:
            await client.close()
