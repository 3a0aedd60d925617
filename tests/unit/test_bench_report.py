"""bench/report.py: medians over runs, Switchboard's ratio to each peer, and the targets."""

from bench.report import (
    AIO_PIKA,
    ALTERNATED_SATURATION,
    SOCKETIO,
    SWITCHBOARD,
    SWITCHBOARD_4_2,
    SWITCHBOARD_HISTORY,
    Measurement,
    advantage,
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
                7500,
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
        (target.metric, target.system): (figure, met)
        for target, figure, met in check_targets(rows)
    }
    assert checked[("delivered/s at saturation", SWITCHBOARD)] == (7.5, False)
    assert checked[("KiB per idle connection at 10,000", SWITCHBOARD)] == (17, False)
    assert checked[("replay of 10,000 on init", SWITCHBOARD)] == (None, None)
    # History off alone: the comparison of history on with it is not run.
    assert checked[(ALTERNATED_SATURATION, SWITCHBOARD_HISTORY)] == (None, None)


def test_a_history_target_compares_history_on_with_off() -> None:
    rows = summarize(
        [
            Measurement(
                "1:1 cross-gateway",
                SWITCHBOARD,
                ALTERNATED_SATURATION,
                4000,
                "msg/s",
                "higher",
            ),
            Measurement(
                "1:1 cross-gateway",
                SWITCHBOARD_HISTORY,
                ALTERNATED_SATURATION,
                3000,
                "msg/s",
                "higher",
            ),
            Measurement(
                "7 history page",
                SWITCHBOARD_HISTORY,
                "p99 ms of a page of 50 at 250/s (1,000,000 rows)",
                12,
                "ms",
                "lower",
            ),
        ]
    )
    checked = {
        target.text: (figure, met) for target, figure, met in check_targets(rows)
    }
    on_off = next(text for text in checked if text.startswith("history on: 1:1"))
    assert checked[on_off] == (0.75, False)
    page = next(text for text in checked if text.startswith("history page"))
    assert checked[page] == (12, True)
    assert "| 0.75x switchboard | >= 0.80 | **no** |" in markdown(rows, {}, runs=1)


def test_the_advantage_reads_the_metric_either_way() -> None:
    fast, slow = summarize(
        [
            Measurement("s", SWITCHBOARD, "p99", 10, "ms", "lower"),
            Measurement("s", SWITCHBOARD_HISTORY, "p99", 20, "ms", "lower"),
        ]
    )
    assert advantage(fast, slow) == 2
    assert advantage(slow, fast) == 0.5


def test_the_backend_targets_compare_with_raw_publishes_of_the_same_run() -> None:
    def backend(system: str, metric: str, value: float) -> Measurement:
        return Measurement("8 backend sends", system, metric, value, "msg/s", "higher")

    answered = "messages/s from one backend process, answered"
    delivered = "recipients/s from one backend process, delivered"
    rows = summarize(
        [
            backend(AIO_PIKA, answered, 4000),
            backend(AIO_PIKA, delivered, 4000),
            backend(SWITCHBOARD, answered, 2000),
            backend(SWITCHBOARD, delivered, 5000),
        ]
    )
    checked = {
        target.metric: (figure, met) for target, figure, met in check_targets(rows)
    }
    assert checked[answered] == (0.5, False)
    assert checked[delivered] == (1.25, True)


def scaling(system: str, value: float) -> Measurement:
    """A saturation of scenario 9 (scaling on one machine)."""
    return Measurement(
        "9 scaling on one machine",
        system,
        "delivered/s at saturation",
        value,
        "msg/s",
        "higher",
    )


def test_the_scaling_target_compares_4_gateways_and_2_routers_with_2_and_1() -> None:
    rows = summarize([scaling(SWITCHBOARD, 2500), scaling(SWITCHBOARD_4_2, 2000)])
    checked = {
        target.text: (figure, met) for target, figure, met in check_targets(rows)
    }
    assert checked[
        "4 gateways and 2 routers deliver more than 2 and 1 at saturation"
    ] == (0.8, False)


def test_a_figure_on_the_bound_meets_only_the_targets_that_allow_it() -> None:
    def page(value: float) -> Measurement:
        return Measurement(
            "7 history page",
            SWITCHBOARD_HISTORY,
            "p99 ms of a page of 50 at 250/s (1,000,000 rows)",
            value,
            "ms",
            "lower",
        )

    def met(rows: list[Measurement], prefix: str) -> bool | None:
        checked = check_targets(summarize(rows))
        return next(met for target, _, met in checked if target.text.startswith(prefix))

    more_than = "4 gateways and 2 routers deliver more than"
    level = [scaling(SWITCHBOARD, 2000), scaling(SWITCHBOARD_4_2, 2000)]
    ahead = [scaling(SWITCHBOARD, 2000), scaling(SWITCHBOARD_4_2, 2001)]
    assert met(level, more_than) is False
    assert met(ahead, more_than) is True
    assert met([page(20)], "history page of 50 under 20 ms") is False
    assert met([page(19.9)], "history page of 50 under 20 ms") is True
    assert "| > 1.00 | **no** |" in markdown(summarize(level), {}, runs=1)
