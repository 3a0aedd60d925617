"""Measurements, medians over runs, ratios to the peers, and the markdown and JSON reports."""

import json
import os
import platform
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Literal

SWITCHBOARD = "switchboard"
SWITCHBOARD_HISTORY = "switchboard-history"
"""Switchboard with ``SWITCHBOARD_HISTORY=on``: every 1:1 and group message kept and numbered."""
SWITCHBOARD_4_2 = "switchboard-4g-2r"
"""The relay with 4 gateways and 2 routers (and 1 offline store), against 2 and 1 (s9)."""
SOCKETIO = "socketio-aiopika"
WS_RELAY = "websockets-relay"
AIO_PIKA = "aio-pika-raw"
REDIS_PY = "redis-py"
"""redis-py's asyncio client alone (scenario 11: the cost of one round trip)."""
ALTERNATED_SATURATION = "delivered/s at saturation, alternated with history off/on"
"""``s1``'s metric for history off and on saturated in turn, both stacks up (the history target)."""

Better = Literal["higher", "lower"]

PACKAGES = ("aio-pika", "websockets", "redis", "asyncpg", "python-socketio", "msgspec")


@dataclass(frozen=True)
class Measurement:
    """One figure of one system in one scenario, from one run.

    ``lost`` counts messages owed and never received in the run that gave this figure.
    """

    scenario: str  # e.g. "1:1 cross-gateway"
    system: str  # SWITCHBOARD or a peer
    metric: str  # e.g. "delivered/s at saturation", "p99 ms at 1000/s"
    value: float
    unit: str  # "msg/s", "ms", "KiB", "s", "rows/s", "init/s", "broker msgs"
    better: Better
    lost: int = 0
    note: str = ""  # the configuration behind this figure, if not the default


@dataclass(frozen=True)
class Row:
    """The median of one (scenario, metric, system) over the runs."""

    scenario: str
    metric: str
    system: str
    median: float
    runs: list[float]
    unit: str
    better: Better
    lost: int
    note: str


def summarize(measurements: Iterable[Measurement]) -> list[Row]:
    grouped: dict[tuple[str, str, str], list[Measurement]] = defaultdict(list)
    for m in measurements:
        grouped[(m.scenario, m.metric, m.system)].append(m)
    rows = []
    for (scenario, metric, system), group in grouped.items():
        values = [m.value for m in group]
        rows.append(
            Row(
                scenario=scenario,
                metric=metric,
                system=system,
                median=statistics.median(values),
                runs=values,
                unit=group[0].unit,
                better=group[0].better,
                lost=sum(m.lost for m in group),
                note=next((m.note for m in group if m.note), ""),
            )
        )
    return rows


def ratio(row: Row, switchboard: Row | None) -> float | None:
    """Switchboard's advantage over this peer: above 1 means Switchboard does better."""
    if switchboard is None or row.system == SWITCHBOARD:
        return None
    return advantage(switchboard, row)


def advantage(mine: Row, other: Row) -> float | None:
    """How much better ``mine`` does than ``other`` on the same metric, whether it is higher-
    or lower-is-better: above 1 means better; None when either median is 0."""
    if not mine.median or not other.median:
        return None
    if mine.better == "higher":
        return mine.median / other.median
    return other.median / mine.median


@dataclass(frozen=True)
class Target:
    """A goal of the benchmarks: a figure of Switchboard's, or its ratio to a peer, and a bound."""

    text: str
    scenario: str
    metric: str
    bound: float
    peer: str | None = None
    """When set, the bound applies to ``system``'s ``advantage()`` over this peer; else to
    the median."""
    at_most: bool = False
    """The figure must not exceed the bound (else: must reach it)."""
    strictly: bool = False
    """The figure must pass the bound, not only reach it ("more than", "under")."""
    system: str = SWITCHBOARD
    """Whose figure is checked: Switchboard as configured by default, or with history on."""


TARGETS = (
    Target(
        "1:1 saturation at least 8x python-socketio (aio-pika manager)",
        "1:1 cross-gateway",
        "delivered/s at saturation",
        8.0,
        peer=SOCKETIO,
    ),
    *(
        Target(
            f"{quantile} at {rate}/s no higher than the peer's"
            if quantile == "p99"
            else f"{quantile} at {rate}/s at most 1.5x the peer's",
            "1:1 cross-gateway",
            f"{quantile} ms at {rate}/s",
            1.0 if quantile == "p99" else 1 / 1.5,
            peer=SOCKETIO,
        )
        for rate in ("500", "1,000")
        for quantile in ("p50", "p99")
    ),
    Target(
        "room: broker messages per room message = gateways with members (2)",
        "room of 2,000",
        "broker msgs to servers per room message",
        2.0,
        at_most=True,
    ),
    Target(
        "room deliveries/s at least the peer's",
        "room of 2,000",
        "deliveries/s at 4 msgs/s",
        1.0,
        peer=SOCKETIO,
    ),
    Target(
        "idle authenticated connection at most 12 KiB",
        "5 connections",
        "KiB per idle connection at 10,000",
        12.0,
        at_most=True,
    ),
    Target(
        "replay of 10,000 messages under 1 s",
        "4 offline replay",
        "replay of 10,000 on init",
        1.0,
        at_most=True,
        strictly=True,
    ),
    Target(
        "offline writes at least 5,000 rows/s",
        "4 offline replay",
        "rows/s storing 10,000 for one offline uid",
        5000.0,
    ),
    Target(
        "connection setup at least 1,000 init/s across two gateways",
        "5 connections",
        "init/s until ready (5,000 opening)",
        1000.0,
    ),
    Target(
        "logins: at least 2,000 init/s on one gateway",
        "10 logins",
        "init/s on one gateway (5,000 opening)",
        2000.0,
    ),
    Target(
        "reconnect storm: 10,000 connections of a killed gateway ready and replayed "
        "within 10 s",
        "10 logins",
        "s from a gateway's kill to all 10,000 ready and replayed",
        10.0,
        at_most=True,
    ),
    Target(
        "a backend's api.send with reply_to at least 60% of raw aio-pika confirmed publishes",
        "8 backend sends",
        "messages/s from one backend process, answered",
        0.6,
        peer=AIO_PIKA,
    ),
    Target(
        "a backend's multicast api.send reaches at least raw aio-pika's publishes/s",
        "8 backend sends",
        "recipients/s from one backend process, delivered",
        1.0,
        peer=AIO_PIKA,
    ),
    Target(
        "history on: 1:1 saturation at least 80% of history off's, in the same run "
        "(alternated)",
        "1:1 cross-gateway",
        ALTERNATED_SATURATION,
        0.8,
        peer=SWITCHBOARD,
        system=SWITCHBOARD_HISTORY,
    ),
    Target(
        "4 gateways and 2 routers deliver more than 2 and 1 at saturation",
        "9 scaling on one machine",
        "delivered/s at saturation",
        1.0,
        peer=SWITCHBOARD,
        system=SWITCHBOARD_4_2,
        strictly=True,
    ),
    Target(
        "history writes at least 10,000 messages/s (the 64 pairs of 1:1)",
        "6 history writes",
        "msg/s writing 100,000 between 64 pairs",
        10_000.0,
        system=SWITCHBOARD_HISTORY,
    ),
    Target(
        "sync of 10,000 entries at init under 1 s",
        "4 offline replay",
        "sync of 10,000 on init (since 0)",
        1.0,
        at_most=True,
        system=SWITCHBOARD_HISTORY,
        strictly=True,
    ),
    Target(
        "history page of 50 under 20 ms at p99, 1,000,000 rows, 250 pages/s",
        "7 history page",
        "p99 ms of a page of 50 at 250/s (1,000,000 rows)",
        20.0,
        at_most=True,
        system=SWITCHBOARD_HISTORY,
        strictly=True,
    ),
)


def passes(figure: float, target: Target) -> bool:
    """Whether a figure meets its target's bound."""
    if target.at_most:
        return figure < target.bound if target.strictly else figure <= target.bound
    return figure > target.bound if target.strictly else figure >= target.bound


def comparison(target: Target) -> str:
    """The target's bound as the report writes it: ``>=``, ``>``, ``<=`` or ``<``."""
    return ("<" if target.at_most else ">") + ("" if target.strictly else "=")


def check_targets(rows: list[Row]) -> list[tuple[Target, float | None, bool | None]]:
    """Each target with its system's figure (or ratio) and whether it is met (None: not run)."""
    by_key = {(r.scenario, r.metric, r.system): r for r in rows}
    checked: list[tuple[Target, float | None, bool | None]] = []
    for target in TARGETS:
        mine = by_key.get((target.scenario, target.metric, target.system))
        figure: float | None = None
        if mine is not None and target.peer is None:
            figure = mine.median
        elif mine is not None and target.peer is not None:
            peer = by_key.get((target.scenario, target.metric, target.peer))
            figure = None if peer is None else advantage(mine, peer)
        if figure is None:
            checked.append((target, None, None))
            continue
        met = passes(figure, target)
        checked.append((target, figure, met))
    return checked


def environment() -> dict[str, object]:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "processes_on_machine": sum(
            1 for name in os.listdir("/proc") if name.isdigit()
        ),
        "load_average": os.getloadavg(),
        "packages": versions,
    }


def markdown(rows: list[Row], env: dict[str, object], runs: int) -> str:
    by_key = {(r.scenario, r.metric, r.system): r for r in rows}
    lost = sum(r.lost for r in rows)
    lines = [
        "## Targets",
        "",
        "| target | Switchboard | bound | met |",
        "| --- | --- | --- | --- |",
    ]
    for target, figure, met in check_targets(rows):
        shown = "not run" if figure is None else _figure(figure)
        if figure is not None and target.peer is not None:
            shown += f"x {target.peer}"
        bound = comparison(target) + " " + _figure(target.bound)
        verdict = "" if met is None else ("yes" if met else "**no**")
        lines.append(f"| {target.text} | {shown} | {bound} | {verdict} |")
    lines += [
        f"| no message lost, in any scenario and system | {lost} lost | 0 | "
        f"{'yes' if lost == 0 else '**no**'} |",
        "",
        "Why each missed target is missed, with profiles: [README.md](README.md#missed-targets).",
        "",
        "## Figures",
        "",
        f"Median of {runs} runs. Ratio: Switchboard's advantage over the peer "
        "(above 1 is better for Switchboard, whether the metric is higher- or lower-is-better).",
        "",
        "| scenario | metric | system | median | unit | runs | lost | ratio | note |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ratio_value = ratio(r, by_key.get((r.scenario, r.metric, SWITCHBOARD)))
        runs_text = ", ".join(_figure(v) for v in r.runs)
        lines.append(
            f"| {r.scenario} | {r.metric} | {r.system} | {_figure(r.median)} | {r.unit} "
            f"| {runs_text} | {r.lost} | {'' if ratio_value is None else f'{ratio_value:.2f}x'} "
            f"| {r.note} |"
        )
    lines += ["", "Environment:", "", "```json", json.dumps(env, indent=2), "```"]
    return "\n".join(lines) + "\n"


def to_json(rows: list[Row], env: dict[str, object], runs: int) -> str:
    return json.dumps(
        {"runs": runs, "environment": env, "rows": [asdict(r) for r in rows]}, indent=2
    )


def _figure(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"
