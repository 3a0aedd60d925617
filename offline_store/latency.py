"""How long the offline store's calls to PostgreSQL take: ``proto.metrics.POSTGRES_SECONDS``.

Each method decorated with ``postgres_call`` (or block under ``postgres_block``) is one round
trip as the store sees it: one statement, or one transaction for a whole batch. It is observed
by its operation (``proto.metrics.POSTGRES_OPERATIONS``), never per row or per uid.
"""

import functools
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractContextManager
from typing import Any, ParamSpec, TypeVar

from prometheus_client import Histogram

from proto import metrics
from runtime.metrics import REGISTRY, ROUND_TRIP_BUCKETS_S, observed

P = ParamSpec("P")
R = TypeVar("R")

POSTGRES_CALLS = Histogram(
    metrics.POSTGRES_SECONDS,
    "Calls to PostgreSQL (a statement, or a batch's transaction), by operation.",
    [metrics.LABEL_OPERATION],
    buckets=ROUND_TRIP_BUCKETS_S,
    registry=REGISTRY,
)
_BY_OPERATION = {
    operation: POSTGRES_CALLS.labels(operation)
    for operation in metrics.POSTGRES_OPERATIONS
}


def postgres_block(operation: str) -> AbstractContextManager[None]:
    """Observe the block as ``operation``."""
    return observed(_BY_OPERATION[operation])


def postgres_call(
    operation: str,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """Observe each call of the decorated method as ``operation`` (its child is bound here,
    once; an unknown operation fails at import)."""
    histogram = _BY_OPERATION[operation]

    def decorate(
        method: Callable[P, Awaitable[R]],
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        @functools.wraps(method)
        async def measured(*args: P.args, **kwargs: P.kwargs) -> R:
            with observed(histogram):
                return await method(*args, **kwargs)

        return measured

    return decorate
