"""This process's Prometheus registry, and the metrics every service exports.

One registry per process (nothing goes to prometheus-client's global one): each service adds its
own metrics to ``REGISTRY`` in its ``observability.py``, and ``health.py`` serves it on /metrics.
Names come from ``proto/metrics.py``.
"""

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector

from proto.metrics import BROKER_RECONNECTS_TOTAL, ERRORS_TOTAL, LABEL_CODE, READY

REGISTRY = CollectorRegistry()
"""This process's metrics."""
ProcessCollector(registry=REGISTRY)
ERRORS = Counter(ERRORS_TOTAL, "Errors, by code.", [LABEL_CODE], registry=REGISTRY)
BROKER_RECONNECTS = Counter(
    BROKER_RECONNECTS_TOTAL,
    "Times the RabbitMQ connection was re-established.",
    registry=REGISTRY,
)
READINESS = Gauge(READY, "1 while /readyz answers 200.", registry=REGISTRY)


def count_error(code: str) -> None:
    """Count one error by its code (a service passes only codes from a fixed set)."""
    ERRORS.labels(code).inc()
