"""``python -m tests.chaos [--own-engines] [name-substring ...]``: run the scenarios with the
full load.

Without a name, every scenario; with names, those whose name contains one of them.
``--own-engines`` keeps the scenarios that start engines of their own (a Redis Sentinel set, a
Redis Cluster, a RabbitMQ cluster, a PostgreSQL pair: ``make chaos-cluster``), which leave the
machine's services running. Prints the markdown table of the README's "Reliability" section;
exits 1 when any scenario lost a message (or misrouted one, or broke the mid order), 2 when one
could not run.
"""

import asyncio
import logging
import sys

from proto.logs import configure_logging
from tests.chaos.checker import Report, markdown_table
from tests.chaos.faults import SharedServiceBusy
from tests.chaos.load import LoadShape
from tests.chaos.scenarios import SCENARIOS, run_scenario

FULL_LOAD = LoadShape(users=20, rate_per_user=2.0, warmup_s=10.0, after_s=15.0)


OWN_ENGINES = "--own-engines"


async def main(arguments: list[str]) -> int:
    reports: list[Report] = []
    is_lost = is_skipped = False
    is_own_only = OWN_ENGINES in arguments
    selected = [argument for argument in arguments if argument != OWN_ENGINES]
    chosen = [
        s
        for s in SCENARIOS
        if (not selected or any(n in s.name for n in selected))
        and (not is_own_only or s.own_backing is not None)
    ]
    if not chosen:
        known = ", ".join(scenario.name for scenario in SCENARIOS)
        print(f"no scenario matches {selected}; scenarios: {known}", file=sys.stderr)
        return 2
    for scenario in chosen:
        print(f"running: {scenario.name}", file=sys.stderr, flush=True)
        try:
            result = await run_scenario(scenario, FULL_LOAD)
        except SharedServiceBusy as busy:
            print(f"skipped: {scenario.name}: {busy}", file=sys.stderr)
            is_skipped = True
            continue
        except Exception as exc:
            # A send that never got its receipt, a service that did not come back: a failure
            # of the scenario, reported, and the next one still runs.
            print(f"failed: {scenario.name}: {exc!r}", file=sys.stderr, flush=True)
            is_lost = True
            continue
        print(markdown_table([result]).splitlines()[-1], file=sys.stderr, flush=True)
        reports.append(result)
        is_lost = is_lost or not result.is_ok
    print(markdown_table(reports))
    return 1 if is_lost else 2 if is_skipped else 0


if __name__ == "__main__":
    configure_logging("warning")
    # The client library logs each reconnect; the table is what this run reports.
    logging.getLogger("switchboard_client").setLevel(logging.ERROR)
    sys.exit(asyncio.run(main(sys.argv[1:])))
