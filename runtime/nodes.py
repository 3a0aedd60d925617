"""Several RabbitMQ nodes in ``SWITCHBOARD_AMQP_URL``: connect to the first that answers, and
move on to the next when the connection to one is lost.

aio-pika's robust connection reconnects to the one URL it was given; a cluster node that is gone
would take every reconnect attempt with it. ``NodeFollower`` points the connection at the next
node as soon as the connection is lost (its close callbacks run before the first reconnect
attempt), and again every reconnect interval while it stays lost, so that successive attempts
try the nodes in turn. The query of the first URL (``heartbeat``, ``name``, ...) applies to
every node: aio-pika reads it once.
"""

import asyncio

import aio_pika
import structlog
from aio_pika.abc import AbstractRobustConnection
from yarl import URL

from proto.env import location

log = structlog.get_logger()


def node_urls(url: str) -> list[str]:
    """The URLs of ``SWITCHBOARD_AMQP_URL``: one, or several separated by commas."""
    return [part.strip() for part in url.split(",") if part.strip()]


async def connect_first(
    urls: list[str], connect_timeout_s: float
) -> tuple[AbstractRobustConnection, int]:
    """A robust connection to the first node that answers, and that node's index.

    Raises:
        Exception: what the last node's connection attempt raised, when none answered.
    """
    failure: Exception | None = None
    for index, url in enumerate(urls):
        try:
            connection = await aio_pika.connect_robust(url, timeout=connect_timeout_s)
        except Exception as exc:
            if len(urls) > 1:
                log.warning(
                    "amqp_node_unavailable", node=location(url), error=repr(exc)
                )
            failure = exc
            continue
        return connection, index
    assert failure is not None
    raise failure


class NodeFollower:
    """Points a robust connection at the next node while the connection is lost."""

    def __init__(
        self, connection: AbstractRobustConnection, urls: list[str], index: int
    ) -> None:
        assert isinstance(connection, aio_pika.RobustConnection)
        self._connection = connection
        self._urls = [URL(url) for url in urls]
        self._index = index
        self._lost = asyncio.Event()
        self._task = asyncio.create_task(self._follow())
        connection.close_callbacks.add(self._on_close)

    def _on_close(self, *_: object) -> None:
        connection = self._connection
        if not (connection.is_closed or connection.close_called):  # lost, not closed
            self._next()
            self._lost.set()

    def _next(self) -> None:
        self._index = (self._index + 1) % len(self._urls)
        self._connection.url = self._urls[self._index]
        log.info("amqp_node_next", node=location(str(self._urls[self._index])))

    async def _follow(self) -> None:
        connection = self._connection
        while True:
            await self._lost.wait()
            self._lost.clear()
            while not (
                connection.connected.is_set()
                or connection.is_closed
                or connection.close_called
            ):
                try:
                    async with asyncio.timeout(connection.reconnect_interval):
                        await connection.connected.wait()
                except TimeoutError:
                    self._next()  # the attempt at this node failed: the next one

    async def close(self) -> None:
        self._connection.close_callbacks.discard(self._on_close)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
