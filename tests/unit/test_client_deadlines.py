"""The Python client's open deadline: it grows with each attempt that failed
(``policy.open_deadline_s``). No I/O: the connections are stood in for."""

import asyncio
from collections.abc import Iterator

from switchboard_client import Client
from switchboard_client.policy import open_deadline_s

INVALID_TOKEN = 4003


def test_the_deadline_doubles_after_each_failed_attempt_up_to_its_cap() -> None:
    assert [open_deadline_s(attempt, 5.0, 20.0) for attempt in range(5)] == [
        5.0,
        10.0,
        20.0,
        20.0,
        20.0,
    ]
    assert open_deadline_s(10_000, 5.0, 20.0) == 20.0


class RecordedClient(Client):
    """A client whose connections end as told, each recording the deadline it was given."""

    def __init__(self, outcomes: Iterator[tuple[int | None, bool]]) -> None:
        super().__init__(
            ["ws://gateway-0:8001/ws", "ws://gateway-1:8001/ws"],
            "token",
            open_timeout_s=5.0,
            open_timeout_max_s=20.0,
            random=lambda: 0.0,  # no reconnect delay
        )
        self._outcomes = outcomes
        self.deadlines: list[float] = []

    async def _connection(
        self, url: str, deadline_s: float
    ) -> tuple[int | None, str, bool]:
        self.deadlines.append(deadline_s)
        close_code, was_ready = next(self._outcomes)
        return close_code, "", was_ready


async def test_each_failed_attempt_waits_longer_and_a_ready_connection_starts_over() -> (
    None
):
    failed, dropped_after_ready = (None, False), (None, True)
    client = RecordedClient(
        iter(
            [
                failed,
                failed,
                failed,
                failed,
                dropped_after_ready,
                failed,
                (INVALID_TOKEN, False),  # terminal: the client stops
            ]
        )
    )
    async with asyncio.timeout(5):
        await client._reconnect_forever()
    assert client.deadlines == [5.0, 10.0, 20.0, 20.0, 20.0, 5.0, 10.0]
