"""The JavaScript client (clients/js) under Node's test runner, against a real stack.

This test starts three gateways, a router and an offline store, then runs
``node --test clients/js/test/`` with the gateways in the environment; the Node tests stop two of
the gateways themselves (SIGTERM, then SIGSTOP and SIGKILL) to test reconnects.
"""

import asyncio
import json
import os
import shutil

import pytest

from tests.support.processes import REPO_ROOT
from tests.support.stack import Stack
from tests.support.timing import scaled
from tests.support.tokens import TEST_JWT_SECRET

pytestmark = pytest.mark.integration

JS_DIR = REPO_ROOT / "clients" / "js"
NODE_TIMEOUT_S = 90.0


async def test_js_client_against_the_stack(stack: Stack) -> None:
    node = shutil.which("node")
    assert node, "Node.js 20+ is needed for the JavaScript client's tests"
    assert (JS_DIR / "node_modules" / "ws").is_dir(), (
        "run `make js-deps` (npm ci in clients/js)"
    )
    await stack.start(gateways=3)
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
        "test/",
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
    # The Node tests stopped gateways 0 (cleanly) and 1 (killed while frozen).
    assert not stack.gateways[0].process.is_running
