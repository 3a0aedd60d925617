"""bench/hops.py: a hop's mean and median over a phase, from two scrapes of each process."""

import math

import pytest

from bench.hops import HOPS, Labels, Samples, breakdown, cpu_seconds, median_of
from proto import metrics


def test_the_median_is_read_linearly_within_its_bucket() -> None:
    # 10 observations: 4 up to 1 ms, 8 up to 2 ms, 10 up to 5 ms.
    assert median_of({0.001: 4, 0.002: 8, 0.005: 10, math.inf: 10}) == pytest.approx(
        0.00125
    )
    assert median_of({0.001: 10, math.inf: 10}) == pytest.approx(0.0005)
    assert math.isnan(median_of({0.001: 0, math.inf: 0}))
    assert median_of({0.001: 0, math.inf: 4}) == 0.001  # past the last bound


def histogram(name: str, buckets: dict[str, float], total: float) -> Samples:
    samples: Samples = {
        (f"{name}_bucket", (("le", le),)): count for le, count in buckets.items()
    }
    samples[(f"{name}_count", ())] = buckets["+Inf"]
    samples[(f"{name}_sum", ())] = total
    return samples


def test_a_hop_is_what_the_phase_added_over_every_process_of_its_service() -> None:
    name = metrics.GATEWAY_PUSH_SECONDS
    first_before = histogram(name, {"0.001": 1, "0.0025": 1, "+Inf": 1}, 0.0005)
    first_after = histogram(name, {"0.001": 3, "0.0025": 5, "+Inf": 5}, 0.0065)
    second_before = histogram(name, {"0.001": 0, "0.0025": 0, "+Inf": 0}, 0.0)
    second_after = histogram(name, {"0.001": 2, "0.0025": 4, "+Inf": 4}, 0.006)
    figures = breakdown(
        {"gateway": [first_before, second_before]},
        {"gateway": [first_after, second_after]},
    )
    [push] = [f for f in figures if f.hop.metric == name]
    assert push.count == 8
    assert push.mean_s == pytest.approx(0.012 / 8)
    # 4 of 8 up to 1 ms: the median is the bucket's bound.
    assert push.median_s == pytest.approx(0.001)
    # A hop of a service that was not scraped has no figure.
    [age] = [f for f in figures if f.hop.metric == metrics.ROUTER_QUEUE_WAIT_SECONDS]
    assert age.count == 0
    assert math.isnan(age.mean_s)


def test_every_hop_reads_a_histogram_the_services_declare() -> None:
    assert {hop.metric for hop in HOPS} <= set(metrics.ALL_NAMES)
    assert {hop.module for hop in HOPS} == {"gateway", "router", "offline_store"}


def test_cpu_is_summed_over_the_processes_of_each_service() -> None:
    cpu = "process_cpu_seconds_total"
    gateway: Labels = (("service", "gateway"),)
    before: dict[str, list[Samples]] = {
        "gateway": [{(cpu, gateway): 1.0}, {(cpu, gateway): 2.0}]
    }
    after: dict[str, list[Samples]] = {
        "gateway": [{(cpu, gateway): 1.5}, {(cpu, gateway): 2.25}]
    }
    assert cpu_seconds(before, after) == {"gateway": pytest.approx(0.75)}
