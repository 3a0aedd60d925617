"""``python -m bench [--runs N] [--quick] [scenario ...]``: run the benchmarks, print the table.

Each scenario module in ``bench/scenarios/`` has ``NAME`` and ``async def run(quick: bool) ->
list[Measurement]``; every scenario starts and stops its own systems in its own namespace.
Without ``--quick`` the results go to ``bench/RESULTS.md`` and ``bench/results.json``.
"""

import argparse
import asyncio
import importlib
import pkgutil
import resource
import sys
import time
from pathlib import Path
from types import ModuleType

from bench import report, scenarios

HERE = Path(__file__).parent


def scenario_modules(selected: list[str]) -> list[ModuleType]:
    modules = [
        importlib.import_module(f"bench.scenarios.{info.name}")
        for info in pkgutil.iter_modules(scenarios.__path__)
    ]
    return [
        m for m in modules if not selected or any(s in m.__name__ for s in selected)
    ]


def raise_file_limit() -> None:
    """Many connections need many descriptors; child processes inherit the raised limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def main(runs: int, quick: bool, selected: list[str]) -> int:
    raise_file_limit()
    modules = scenario_modules(selected)
    if not modules:
        print(f"no scenario matches {selected}", file=sys.stderr)
        return 2
    measurements: list[report.Measurement] = []
    started = time.monotonic()
    for run in range(1, runs + 1):
        for module in modules:
            name = module.NAME
            print(f"run {run}/{runs}: {name}", file=sys.stderr, flush=True)
            measured = await module.run(quick)
            for m in measured:
                print(
                    f"  {m.system:18} {m.metric:40} {m.value:12.2f} {m.unit} lost={m.lost}",
                    file=sys.stderr,
                    flush=True,
                )
            measurements += measured
    rows = report.summarize(measurements)
    env = {**report.environment(), "duration_s": round(time.monotonic() - started)}
    text = report.markdown(rows, env, runs)
    print(text)
    if not quick and not selected:
        (HERE / "RESULTS.md").write_text("# Benchmark results\n\n" + text)
        (HERE / "results.json").write_text(report.to_json(rows, env, runs) + "\n")
    lost = sum(r.lost for r in rows)
    return 1 if lost else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--quick", action="store_true", help="short phases, no files written"
    )
    parser.add_argument(
        "scenario", nargs="*", help="substrings of scenario module names"
    )
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.runs, args.quick, args.scenario)))
