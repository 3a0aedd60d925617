"""The JavaScript client (clients/js) under Node's test runner, against a real stack.

The first test starts three gateways, a router and an offline store, then runs
``node --test clients/js/test/`` with the gateways in the environment; the Node tests stop two of
the gateways themselves (SIGTERM, then SIGSTOP and SIGKILL) to test reconnects. The second runs
``clients/js/test-history/`` against two gateways with ``SWITCHBOARD_HISTORY=on``.
"""

import asyncio
import json
import os
import shutil

import pytest

from proto import env as settings
from tests.support.processes import REPO_ROOT
from tests.support.stack import Stack
from tests.support.timing import scaled
from tests.support.tokens import TEST_JWT_SECRET

pytestmark = pytest.mark.integration

JS_DIR = REPO_ROOT / "clients" / "js"
NODE_TIMEOUT_S = 90.0


async def run_node_tests(stack: Stack, directory: str) -> str:
    """Run ``node --test <directory>`` in clients/js against the stack; return its report."""
    node = shutil.which("node")
    assert node, "Node.js 20+ is needed for the JavaScript client's tests"
    assert (JS_DIR / "node_modules" / "ws").is_dir(), (
        "run `make js-deps` (npm ci in clients/js)"
    )
    gateways = [
        {"url": gateway.url, "pid": gateway.process.process.pid}
        for gateway in stack.gateways
    ]
    env = {
        **os.environ,
        "SWITCHBOARD_TEST_GATEWAYS": json.dumps(gateways),
        "SWITCHBOARD_TEST_JWT_SECRET": TEST_JWT_SECRET,
    }
    process = await asyncio.create_subprocess_exec(
        node,
        "--test",
        "--test-concurrency=1",
        "--test-reporter=spec",
        directory,
        cwd=JS_DIR,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(scaled(NODE_TIMEOUT_S)):
            output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    report = output.decode(errors="replace")
    print(report)
    assert process.returncode == 0, report
    assert "# fail 0" in report or "\u2139 fail 0" in report, report
    return report


async def test_js_client_against_the_stack(stack: Stack) -> None:
    await stack.start(gateways=3)
    await run_node_tests(stack, "test/")
    # The Node tests stopped gateways 0 (cleanly) and 1 (killed while frozen).
    assert not stack.gateways[0].process.is_running


async def test_js_client_history_against_a_history_stack(stack: Stack) -> None:
    stack.settings[settings.HISTORY] = "on"
    await stack.start(gateways=2)
    report = await run_node_tests(stack, "test-history/")
    assert "# pass 3" in report or "\u2139 pass 3" in report, report
