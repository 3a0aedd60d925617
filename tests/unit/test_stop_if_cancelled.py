"""A loop that runs until cancelled stops even when a library turns the cancel into an error."""

import asyncio

from runtime.shutdown import stop_if_cancelled


async def swallowing_call(started: asyncio.Event) -> None:
    """A library call that turns a cancel into another exception, as aiormq can."""
    started.set()
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        raise ConnectionError("channel closed") from None


async def retry_loop(started: asyncio.Event, failures: list[str]) -> None:
    """The shape of the services' schedules: call, log a failure, sleep, again."""
    while True:
        try:
            await swallowing_call(started)
        except Exception as exc:
            stop_if_cancelled()
            failures.append(repr(exc))
        await asyncio.sleep(0.01)


async def test_a_cancel_turned_into_an_error_still_stops_the_loop() -> None:
    started = asyncio.Event()
    failures: list[str] = []
    task = asyncio.create_task(retry_loop(started, failures))
    await started.wait()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2)
    assert done == {task}
    assert task.cancelled()
    assert failures == []


async def test_nothing_happens_without_a_cancel() -> None:
    stop_if_cancelled()  # returns: nobody asked this task to stop
