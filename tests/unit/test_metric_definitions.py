"""The metrics added for operations: the service label on shared metrics, build info, the
round-trip histograms and their fixed label sets, the gateway's closes and heartbeats."""

import platform
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
from prometheus_client import Counter, Gauge, Histogram

import offline_store.latency
import offline_store.observability
import router.observability
from gateway import observability as gateway_metrics
from proto import frames, metrics
from proto.codes import CloseCode
from proto.envelopes import Heartbeat, Outgoing
from proto.mids import MidFactory
from runtime.metrics import (
    PUBLISH_CONFIRM,
    REGISTRY,
    ROUND_TRIP_BUCKETS_S,
    ServiceRegistry,
    build_version,
    observed,
)

ROOT = Path(__file__).parents[2]


def labels_of(registry: ServiceRegistry) -> dict[str, list[dict[str, str]]]:
    return {
        family.name: [sample.labels for sample in family.samples]
        for family in registry.collect()
    }


def test_shared_metrics_carry_the_service_once_it_is_named() -> None:
    registry = ServiceRegistry()
    Counter(metrics.ERRORS_TOTAL, "e", [metrics.LABEL_CODE], registry=registry).labels(
        "x"
    ).inc()
    Gauge(metrics.READY, "r", registry=registry).set(1)
    Histogram(metrics.PUBLISH_CONFIRM_SECONDS, "p", registry=registry).observe(0.01)
    Gauge("process_open_fds", "f", registry=registry).set(3)
    Counter(metrics.DELIVERIES_TOTAL, "d", registry=registry).inc()

    unnamed = labels_of(registry)
    assert all(
        metrics.LABEL_SERVICE not in labels
        for samples in unnamed.values()
        for labels in samples
    )

    registry.service = "offline-store"
    named = labels_of(registry)
    for family in (
        "switchboard_errors",
        metrics.READY,
        metrics.PUBLISH_CONFIRM_SECONDS,
        "process_open_fds",
    ):
        assert named[family], family
        for labels in named[family]:
            assert labels[metrics.LABEL_SERVICE] == "offline-store", family
    assert named["switchboard_errors"][0]["code"] == "x"  # its own labels stay
    assert all(
        metrics.LABEL_SERVICE not in labels
        for labels in named["switchboard_gateway_deliveries"]
    )
    # A scrape asking for some names (name[]=...) gets the label too.
    [restricted] = registry.restricted_registry([metrics.READY]).collect()
    assert restricted.samples[0].labels == {metrics.LABEL_SERVICE: "offline-store"}


def test_the_service_names_are_the_pods_component_labels() -> None:
    components = set()
    for manifest in (ROOT / "k8s" / "base").glob("*-deployment.yaml"):
        for line in manifest.read_text().splitlines():
            if "app.kubernetes.io/component:" in line:
                components.add(line.split(":", 1)[1].strip())
    assert set(metrics.SERVICES.values()) == components
    assert set(metrics.SERVICES) == {"gateway", "router", "offline_store"}


def test_build_info_is_the_projects_version_and_python() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert build_version() == project["version"]
    [family] = [f for f in REGISTRY.collect() if f.name == metrics.BUILD_INFO]
    [sample] = family.samples
    assert sample.value == 1
    assert sample.labels[metrics.LABEL_VERSION] == project["version"]
    assert sample.labels[metrics.LABEL_PYTHON] == platform.python_version()


def test_round_trip_buckets_are_milliseconds_up_to_seconds() -> None:
    assert ROUND_TRIP_BUCKETS_S[0] <= 0.001
    assert ROUND_TRIP_BUCKETS_S[-1] >= 5
    assert list(ROUND_TRIP_BUCKETS_S) == sorted(ROUND_TRIP_BUCKETS_S)
    assert PUBLISH_CONFIRM._upper_bounds[:-1] == list(ROUND_TRIP_BUCKETS_S)


def exported_operations(name: str) -> set[str]:
    return {
        sample.labels[metrics.LABEL_OPERATION]
        for family in REGISTRY.collect()
        if family.name == name
        for sample in family.samples
        if metrics.LABEL_OPERATION in sample.labels
    }


def test_redis_and_postgres_export_every_operation_from_the_start() -> None:
    assert router.observability.REDIS_BY_OPERATION.keys() == set(
        metrics.REDIS_OPERATIONS
    )
    assert exported_operations(metrics.REDIS_SECONDS) == set(metrics.REDIS_OPERATIONS)
    assert exported_operations(metrics.POSTGRES_SECONDS) == set(
        metrics.POSTGRES_OPERATIONS
    )


def test_an_unknown_postgres_operation_fails_at_definition() -> None:
    with pytest.raises(KeyError):
        offline_store.latency.postgres_call("per_uid_thing")


class Recorded:
    def __init__(self) -> None:
        self.observed: list[float] = []

    def observe(self, amount: float) -> None:
        self.observed.append(amount)


def test_a_block_is_observed_even_when_it_raises() -> None:
    histogram = Recorded()
    with observed(histogram):
        pass
    with pytest.raises(TimeoutError), observed(histogram):
        raise TimeoutError
    assert len(histogram.observed) == 2
    assert all(seconds >= 0 for seconds in histogram.observed)


async def test_a_decorated_postgres_call_is_observed_once_per_call() -> None:
    child = offline_store.latency.POSTGRES_CALLS.labels("count")
    before = child._sum.get(), _count(child)

    @offline_store.latency.postgres_call("count")
    async def statement(value: int) -> int:
        return value + 1

    assert await statement(1) == 2
    assert await statement(2) == 3
    assert _count(child) == before[1] + 2


def _count(child: Histogram) -> float:
    return sum(bucket.get() for bucket in child._buckets)


@dataclass
class Close:
    code: int


@dataclass
class Protocol:
    close_sent: Close | None
    close_rcvd_then_sent: bool | None


def closes(code: str) -> float:
    return gateway_metrics.CLOSES.labels(code)._value.get()


def test_closes_count_the_code_the_gateway_sent() -> None:
    before = {code: closes(code) for code in ("4003", "1000", "other")}
    gateway_metrics.count_close(Protocol(Close(4003), False))
    gateway_metrics.count_close(Protocol(Close(4003), None))
    gateway_metrics.count_close(
        Protocol(Close(1000), True)
    )  # the echo of a client's close
    gateway_metrics.count_close(Protocol(None, None))  # lost without a close
    gateway_metrics.count_close(Protocol(Close(3999), False))
    assert closes("4003") == before["4003"] + 2
    assert closes("1000") == before["1000"]
    assert closes("other") == before["other"] + 1


def test_every_close_code_is_exported_from_the_start() -> None:
    [family] = [f for f in REGISTRY.collect() if f.name == "switchboard_gateway_closes"]
    codes = {s.labels["code"] for s in family.samples if s.name.endswith("_total")}
    assert {str(int(code)) for code in CloseCode} <= codes


def test_heartbeats_are_counted() -> None:
    before = gateway_metrics.HEARTBEATS._value.get()
    gateway_metrics.count_heartbeat()
    assert gateway_metrics.HEARTBEATS._value.get() == before + 1


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("histogram", "expected"),
    [
        (metrics.ROUTER_BATCH_SECONDS, metrics.ROUTER_STAGES),
        (metrics.OFFLINE_INBOX_BATCH_SECONDS, metrics.INBOX_STAGES),
    ],
)
def test_every_stage_of_a_batch_is_exported_from_the_start(
    histogram: str, expected: tuple[str, ...]
) -> None:
    stages = {
        sample.labels[metrics.LABEL_STAGE]
        for family in REGISTRY.collect()
        if family.name == histogram
        for sample in family.samples
    }
    assert stages == set(expected)


def test_the_inbox_wait_of_a_message_runs_from_its_mids_time() -> None:
    count = f"{metrics.OFFLINE_INBOX_WAIT_SECONDS}_count"
    total = f"{metrics.OFFLINE_INBOX_WAIT_SECONDS}_sum"
    before = _sample(count), _sample(total)
    mids = MidFactory("0123456789")
    made = [mids.next_mid(1_000_000), mids.next_mid(1_000_003)]
    # A mid with no time in it (no router makes one) is left out, not a failed batch.
    offline_store.observability.count_inbox_waits(
        [*made, "not-a-mid"], started_ms=1_000_005
    )
    assert _sample(count) == before[0] + 2
    assert _sample(total) == pytest.approx(before[1] + 0.005 + 0.002)


def test_the_queue_wait_of_a_message_runs_from_its_ts_and_leaves_others_out() -> None:
    count = f"{metrics.ROUTER_QUEUE_WAIT_SECONDS}_count"
    total = f"{metrics.ROUTER_QUEUE_WAIT_SECONDS}_sum"
    before = _sample(count), _sample(total)

    def outgoing(ts: int) -> Outgoing:
        return Outgoing(
            mid="m",
            sender="a",
            client_id="1",
            body=msgspec.Raw(b"1"),
            ts=ts,
            gateway_id="gw",
            conn_id="c",
            to="b",
        )

    heartbeat = Heartbeat(gateway_id="gw", connections=1)
    router.observability.count_queue_waits(
        [outgoing(1_000_000), heartbeat, outgoing(1_000_003), outgoing(0)], 1_000_005
    )
    assert _sample(count) == before[0] + 2
    assert _sample(total) == pytest.approx(before[1] + 0.005 + 0.002)


def test_a_pushed_frame_is_counted_sent_and_its_push_observed() -> None:
    count = f"{metrics.GATEWAY_PUSH_SECONDS}_count"
    sent = gateway_metrics.FRAMES_SENT.labels("pong")
    before = _sample(count), sent._value.get()
    gateway_metrics.count_pushed(frames.encode(frames.Pong()), time.monotonic())
    assert _sample(count) == before[0] + 1
    assert sent._value.get() == before[1] + 1


def test_client_acks_are_observed_one_per_message() -> None:
    count = f"{metrics.GATEWAY_CLIENT_ACK_SECONDS}_count"
    before = _sample(count)
    gateway_metrics.count_client_acks([0.001, 0.002])
    gateway_metrics.count_client_acks([])
    assert _sample(count) == before + 2
