"""bench/report.py: medians over runs and Switchboard's ratio to each peer."""

from bench.report import (
    SOCKETIO,
    SWITCHBOARD,
    Measurement,
    check_targets,
    markdown,
    ratio,
    summarize,
)


def measurement(system: str, value: float, better: str = "higher") -> Measurement:
    return Measurement("1:1", system, "delivered/s", value, "msg/s", better)  # type: ignore[arg-type]


def test_the_median_of_the_runs_and_lost_messages_summed() -> None:
    runs = [measurement(SWITCHBOARD, v) for v in (3, 1, 2)]
    runs.append(Measurement("1:1", SWITCHBOARD, "p99 ms", 9, "ms", "lower", lost=2))
    rows = {row.metric: row for row in summarize(runs)}
    assert rows["delivered/s"].median == 2
    assert rows["delivered/s"].runs == [3, 1, 2]
    assert rows["p99 ms"].lost == 2


def test_the_ratio_is_switchboards_advantage_either_way() -> None:
    rows = summarize(
        [
            measurement(SWITCHBOARD, 3000),
            measurement(SOCKETIO, 1000),
            Measurement("1:1", SWITCHBOARD, "p99", 5, "ms", "lower"),
            Measurement("1:1", SOCKETIO, "p99", 20, "ms", "lower"),
        ]
    )
    by = {(r.metric, r.system): r for r in rows}
    assert ratio(by[("delivered/s", SOCKETIO)], by[("delivered/s", SWITCHBOARD)]) == 3
    assert ratio(by[("p99", SOCKETIO)], by[("p99", SWITCHBOARD)]) == 4
    assert ratio(by[("p99", SWITCHBOARD)], by[("p99", SWITCHBOARD)]) is None


def test_the_markdown_table_has_a_row_per_figure() -> None:
    rows = summarize([measurement(SWITCHBOARD, 3000), measurement(SOCKETIO, 1000)])
    text = markdown(rows, {"cpus": 2}, runs=1)
    assert (
        "| 1:1 | delivered/s | socketio-aiopika | 1,000 | msg/s | 1,000 | 0 | 3.00x |"
        in text
    )


def test_targets_are_checked_on_medians_and_ratios() -> None:
    rows = summarize(
        [
            Measurement(
                "1:1 cross-gateway",
                SWITCHBOARD,
                "delivered/s at saturation",
                3500,
                "msg/s",
                "higher",
            ),
            Measurement(
                "1:1 cross-gateway",
                SOCKETIO,
                "delivered/s at saturation",
                1000,
                "msg/s",
                "higher",
            ),
            Measurement(
                "5 connections",
                SWITCHBOARD,
                "KiB per idle connection at 10,000",
                17,
                "KiB",
                "lower",
            ),
        ]
    )
    checked = {
        target.metric: (figure, met) for target, figure, met in check_targets(rows)
    }
    assert checked["delivered/s at saturation"] == (3.5, True)
    assert checked["KiB per idle connection at 10,000"] == (17, False)
    assert checked["replay of 10,000 on init"] == (None, None)
