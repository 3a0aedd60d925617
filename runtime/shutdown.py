"""How every service stops: SIGTERM or SIGINT starts a drain that has a deadline.

Each step of a drain has its own timeout, but a step that waits on a peer that will never
answer (a broker behind a dead network path answers no ``basic.cancel``) must not keep a
process alive past its deadline, nor past a Kubernetes grace period that assumes it. When the
deadline passes, the process logs ``shutdown_overran`` with where each of its tasks waits, and
exits with ``EXIT_OVERRAN``. Nothing is lost by that: what the process had not acknowledged,
the broker delivers again.
"""

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable
from types import CoroutineType, FrameType
from typing import Any

import structlog

log = structlog.get_logger()

EXIT_OVERRAN = 3
"""The exit code of a process whose drain overran its deadline (1 and 2 are startup errors)."""
DRAIN_MARGIN_S = 5.0
"""Added to ``SWITCHBOARD_SHUTDOWN_TIMEOUT_S`` for the last publishes and the close handshakes."""


def stop_if_cancelled() -> None:
    """Raise ``CancelledError`` if the current task was asked to stop.

    For loops that run until cancelled and call into libraries between their sleeps: a cancel
    that arrives inside aiormq, or inside ``asyncio.timeout`` as it expires (Python 3.11), can
    come out as another exception or as none, and the loop would sleep on past its drain.
    ``Task.cancelling()`` still counts the request.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def stop_on_signals(timeout_s: float) -> asyncio.Event:
    """Return an event set by the first SIGTERM or SIGINT, and arm the drain's deadline then.

    The process then has ``timeout_s + DRAIN_MARGIN_S`` to return from ``asyncio.run``.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    deadline_s = timeout_s + DRAIN_MARGIN_S

    def on_signal() -> None:
        if not stop.is_set():
            stop.set()
            loop.call_later(deadline_s, _overran, deadline_s)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    return stop


async def finish_within(
    timeout_s: float, step: Awaitable[object], failed: str, **context: str
) -> None:
    """Await one step of a drain under ``timeout_s``; if it fails or times out, log ``failed``
    (with ``context``) and go on: the next steps (and the broker's redelivery) do not depend
    on it."""
    try:
        async with asyncio.timeout(timeout_s):
            await step
    except Exception as exc:
        log.warning(failed, error=repr(exc), **context)


def _overran(deadline_s: float) -> None:
    waits = {task.get_name(): awaiting(task.get_coro()) for task in asyncio.all_tasks()}
    log.error("shutdown_overran", deadline_s=deadline_s, tasks=waits)
    sys.stdout.flush()
    sys.stderr.flush()
    # The drain cannot finish: leave without running the cleanups that wait on it.
    os._exit(EXIT_OVERRAN)


def awaiting(coroutine: Any) -> list[str]:
    """Where a suspended coroutine waits: ``file:line function`` for each coroutine it awaits."""
    where = []
    while coroutine is not None:
        frame: FrameType | None = getattr(coroutine, "cr_frame", None) or getattr(
            coroutine, "gi_frame", None
        )
        if frame is None:
            break
        code = frame.f_code
        where.append(f"{code.co_filename}:{frame.f_lineno} {code.co_name}")
        coroutine = (
            coroutine.cr_await
            if isinstance(coroutine, CoroutineType)
            else getattr(coroutine, "gi_yieldfrom", None)
        )
    return where
