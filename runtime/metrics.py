"""This process's Prometheus registry, and the metrics every service exports.

One registry per process (nothing goes to prometheus-client's global one): each service adds its
own metrics to ``REGISTRY`` in its ``observability.py``, and ``health.py`` serves it on /metrics.
Names come from ``proto/metrics.py``. The metrics every service exports under one name
(``proto.metrics.SHARED_NAMES`` and ``process_*``) get the ``service`` label as they are
collected, once ``identify`` named the service: nothing is looked up per message.
"""

import importlib.metadata
import platform
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import RestrictedRegistry

from proto.metrics import (
    BROKER_RECONNECTS_TOTAL,
    BUILD_INFO,
    DISTRIBUTION,
    ERRORS_TOTAL,
    LABEL_CODE,
    LABEL_PYTHON,
    LABEL_SERVICE,
    LABEL_VERSION,
    PUBLISH_CONFIRM_SECONDS,
    READY,
    SHARED_NAMES,
    SHARED_PREFIX,
)

ROUND_TRIP_BUCKETS_S = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
"""Buckets of the round-trip histograms (broker confirms, Redis, PostgreSQL): milliseconds
apart at the bottom, up to the publish and command timeouts."""
HOP_BUCKETS_S = (*ROUND_TRIP_BUCKETS_S, 10.0, 30.0)
"""Buckets of the histograms of a message's hops (``proto.metrics``: the wait for a ``Batch``,
a router's queue, a push, a client's ack): the round trips' and up to the ack timeout, since a
hop lasts a millisecond or two when all is well, and seconds behind a backlog."""
UNKNOWN_VERSION = "unknown"


class ServiceRegistry(CollectorRegistry):
    """A registry that labels the shared metrics with the service's name as they are collected."""

    service: str | None = None
    """Set by ``identify``; until then (tests in one process) no label is added."""

    def collect(self) -> Iterator[Metric]:
        return self.labelled(super().collect())

    def restricted_registry(self, metric_names: Iterable[str]) -> "_Restricted":  # type: ignore[override]
        """A scrape that asks for some metrics (``name[]=``) gets the label too."""
        return _Restricted(self, super().restricted_registry(metric_names))

    def labelled(self, families: Iterable[Metric]) -> Iterator[Metric]:
        service = self.service
        for family in families:
            if service is None or not _is_shared(family.name):
                yield family
                continue
            labelled = Metric(
                family.name, family.documentation, family.type, family.unit
            )
            labelled.samples = [
                sample._replace(labels={LABEL_SERVICE: service, **sample.labels})
                for sample in family.samples
            ]
            yield labelled


class _Restricted:
    def __init__(
        self, registry: ServiceRegistry, restricted: RestrictedRegistry
    ) -> None:
        self._registry = registry
        self._restricted = restricted

    def collect(self) -> Iterator[Metric]:
        return self._registry.labelled(self._restricted.collect())


def _is_shared(name: str) -> bool:
    return name.startswith(SHARED_PREFIX) or any(
        name == shared or name == shared.removesuffix("_total")
        for shared in SHARED_NAMES
    )


REGISTRY = ServiceRegistry()
"""This process's metrics."""
ProcessCollector(registry=REGISTRY)
ERRORS = Counter(ERRORS_TOTAL, "Errors, by code.", [LABEL_CODE], registry=REGISTRY)
BROKER_RECONNECTS = Counter(
    BROKER_RECONNECTS_TOTAL,
    "Times the RabbitMQ connection was re-established.",
    registry=REGISTRY,
)
READINESS = Gauge(READY, "1 while /readyz answers 200.", registry=REGISTRY)
BUILD = Gauge(
    BUILD_INFO,
    "Always 1: the version of Switchboard and of Python this process runs.",
    [LABEL_VERSION, LABEL_PYTHON],
    registry=REGISTRY,
)
PUBLISH_CONFIRM = Histogram(
    PUBLISH_CONFIRM_SECONDS,
    "Time from a publish to the broker's confirm (confirmed publishes).",
    buckets=ROUND_TRIP_BUCKETS_S,
    registry=REGISTRY,
)


def build_version() -> str:
    """The installed distribution's version (pyproject.toml's), or ``unknown``."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return UNKNOWN_VERSION


BUILD.labels(build_version(), platform.python_version()).set(1)


def identify(service: str) -> None:
    """Label this process's shared metrics with ``service`` (``proto.metrics.SERVICES``)."""
    REGISTRY.service = service


def count_error(code: str) -> None:
    """Count one error by its code (a service passes only codes from a fixed set)."""
    ERRORS.labels(code).inc()


class Observer(Protocol):
    """A histogram, or one labelled child of one."""

    def observe(self, amount: float) -> None: ...


@contextmanager
def observed(histogram: Observer) -> Iterator[None]:
    """Observe the time the block takes into ``histogram`` (a child bound once), in seconds;
    a block that raises is observed too (a timeout shows as its length)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        histogram.observe(time.perf_counter() - start)
