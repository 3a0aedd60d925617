"""Where a Switchboard message's milliseconds go: its hops, read from the services' /metrics.

Every gateway, router and offline store of a benchmark stack serves /metrics
(``bench/servers.py``); the hops are histograms there (``proto/metrics.py``). A phase is
scraped before and after, and each hop's figure is what the phase added, over every process of
its service: the mean (exact: the ``_sum`` over the ``_count``) and the median (read from the
buckets, linearly within one: as close as the buckets are).

The hops, in a message's order, and what lies between them:

1. the sender's gateway holds the frame for its ``Batch`` (``batch wait``); the publish to its
   confirm (``gateway confirm``) runs beside what follows: the router may have it first;
2. the router sees the message that old when its batch starts (``router age``: the ``Batch``
   wait, the broker, the quorum queue, the router's inbox); then its batch's stages;
2b. with history on, the offline store sees it that old when its inbox batch starts (``store
   age``: the router's ``InboxBatch``, the broker, ``<ns>.inbox``); then that batch's stages
   (decode, write: its transaction and the read of the syncing connections, deliver, settle);
   with history off nothing is observed there;
3. the recipient's gateway consumes the delivery that long after the sender's gateway accepted
   the message (``delivery age``, from the mid's time); then writes it to the socket (``push``);
4. the client acknowledges it (``client ack``: off the latency's path, it frees the delivery).

Ages cross processes on the host's wall clock, in whole milliseconds at both ends (the means
are right, each value within 1 ms); the other hops are each one process's monotonic clock.
"""

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from proto import metrics

SCRAPE_TIMEOUT_S = 5.0
CPU_SECONDS = "process_cpu_seconds_total"
"""prometheus-client's process collector: user and system CPU of the process."""

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]


@dataclass(frozen=True)
class Hop:
    """One histogram of one service, with the labels that pick its series."""

    name: str
    """How the breakdown calls it."""
    module: str
    """The service's package (``gateway``, ``router``, ``offline_store``): whose processes
    export it."""
    metric: str
    labels: Labels = ()


def stage_hops(
    prefix: str, module: str, metric: str, stages: Sequence[str]
) -> tuple[Hop, ...]:
    """One hop per stage of a service's batch histogram (its ``stage`` label)."""
    return tuple(
        Hop(f"{prefix} {stage}", module, metric, ((metrics.LABEL_STAGE, stage),))
        for stage in stages
    )


HOPS = (
    Hop("gateway: wait for its Batch", "gateway", metrics.GATEWAY_BATCH_WAIT_SECONDS),
    Hop(
        "gateway: Batch publish to confirm",
        "gateway",
        metrics.PUBLISH_CONFIRM_SECONDS,
        ((metrics.LABEL_SERVICE, metrics.SERVICES["gateway"]),),
    ),
    Hop(
        "router: message age at batch start",
        "router",
        metrics.ROUTER_QUEUE_WAIT_SECONDS,
    ),
    *stage_hops(
        "router: batch", "router", metrics.ROUTER_BATCH_SECONDS, metrics.ROUTER_STAGES
    ),
    Hop(
        "store: message age at inbox batch start",
        "offline_store",
        metrics.OFFLINE_INBOX_WAIT_SECONDS,
    ),
    *stage_hops(
        "store: inbox batch",
        "offline_store",
        metrics.OFFLINE_INBOX_BATCH_SECONDS,
        metrics.INBOX_STAGES,
    ),
    Hop(
        "gateway: message age at delivery consume",
        "gateway",
        metrics.DELIVERY_LATENCY_SECONDS,
    ),
    Hop("gateway: delivery consume to socket", "gateway", metrics.GATEWAY_PUSH_SECONDS),
    Hop("gateway: push to client ack", "gateway", metrics.GATEWAY_CLIENT_ACK_SECONDS),
)


@dataclass(frozen=True)
class Figure:
    """One hop over a phase: how many observations, their mean and median, in seconds."""

    hop: Hop
    count: float
    mean_s: float
    median_s: float


async def scrape(port: int) -> Samples:
    """Every sample of one process's /metrics."""
    request = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    async with asyncio.timeout(SCRAPE_TIMEOUT_S):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request)
            response = await reader.read()
        finally:
            writer.close()
    _, _, body = response.partition(b"\r\n\r\n")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


async def scrape_all(ports: Mapping[str, Sequence[int]]) -> dict[str, list[Samples]]:
    """Scrape every process at once; ``ports``: module -> the metrics ports of its processes."""
    modules = list(ports)
    scraped = await asyncio.gather(
        *(asyncio.gather(*(scrape(port) for port in ports[m])) for m in modules)
    )
    return {
        module: list(samples) for module, samples in zip(modules, scraped, strict=True)
    }


def breakdown(
    before: Mapping[str, Sequence[Samples]], after: Mapping[str, Sequence[Samples]]
) -> list[Figure]:
    """Each hop's figure over what happened between the two scrapes (every process summed)."""
    figures = []
    for hop in HOPS:
        pairs = list(
            zip(before.get(hop.module, ()), after.get(hop.module, ()), strict=True)
        )
        count = sum(_delta(b, a, f"{hop.metric}_count", hop.labels) for b, a in pairs)
        total = sum(_delta(b, a, f"{hop.metric}_sum", hop.labels) for b, a in pairs)
        buckets: dict[float, float] = {}
        for b, a in pairs:
            for bound, grown in _bucket_deltas(b, a, hop).items():
                buckets[bound] = buckets.get(bound, 0.0) + grown
        mean = total / count if count else math.nan
        figures.append(Figure(hop, count, mean, median_of(buckets)))
    return figures


def cpu_seconds(
    before: Mapping[str, Sequence[Samples]], after: Mapping[str, Sequence[Samples]]
) -> dict[str, float]:
    """The CPU each service's processes spent between the two scrapes, by module."""
    spent = {}
    for module, scrapes in after.items():
        pairs = zip(before.get(module, ()), scrapes, strict=True)
        spent[module] = sum(
            value - b.get((name, labels), 0.0)
            for b, a in pairs
            for (name, labels), value in a.items()
            if name == CPU_SECONDS
        )
    return spent


def grown(
    before: Mapping[str, Sequence[Samples]],
    after: Mapping[str, Sequence[Samples]],
    module: str,
    name: str,
    labels: Labels = (),
) -> float:
    """How much one sample grew between the two scrapes, over the module's processes."""
    pairs = zip(before.get(module, ()), after.get(module, ()), strict=True)
    return sum(_delta(b, a, name, labels) for b, a in pairs)


def median_of(cumulative: Mapping[float, float]) -> float:
    """The median from cumulative bucket counts (upper bound -> count), linear in its bucket."""
    bounds = sorted(cumulative)
    if not bounds or not cumulative[bounds[-1]]:
        return math.nan
    half = cumulative[bounds[-1]] / 2
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= half:
            if math.isinf(bound):
                return lower
            share = (half - below) / (count - below) if count > below else 0.0
            return lower + (bound - lower) * share
        lower, below = bound, count
    return math.nan


def format_breakdown(
    figures: Sequence[Figure], cpu_us_per_message: Mapping[str, float], rate: int
) -> str:
    lines = [f"  hops at {rate:,}/s (mean, median from buckets; count):"]
    for figure in figures:
        if not figure.count:
            continue  # not on this configuration's path (the store's, history off)
        lines.append(
            f"    {figure.hop.name:42} {figure.mean_s * 1000:8.2f} ms "
            f"{figure.median_s * 1000:8.2f} ms {figure.count:8.0f}"
        )
    lines.append(
        "    CPU per message delivered: "
        + ", ".join(f"{m} {us:.0f} us" for m, us in cpu_us_per_message.items())
    )
    return "\n".join(lines)


def _delta(before: Samples, after: Samples, name: str, labels: Labels) -> float:
    key = (name, labels)
    return after.get(key, 0.0) - before.get(key, 0.0)


def _bucket_deltas(before: Samples, after: Samples, hop: Hop) -> dict[float, float]:
    name = f"{hop.metric}_bucket"
    wanted = dict(hop.labels)
    grown = {}
    for (sample, labels), value in after.items():
        if sample != name:
            continue
        as_dict = dict(labels)
        bound = as_dict.pop("le")
        if as_dict != wanted:
            continue
        grown[float(bound)] = value - before.get((sample, labels), 0.0)
    return grown
