"""``switchboard presence`` and ``switchboard kick`` against a real stack, as an operator runs
them: the command as a process, its reply on stdout, its exit code."""

import asyncio
import json
import os
import sys

import pytest

from proto.codes import CloseCode
from tests.support.processes import REPO_ROOT
from tests.support.stack import Stack
from tests.support.timing import scaled

pytestmark = pytest.mark.integration


async def switchboard(*args: str, within_s: float = 20.0) -> tuple[int, str, str]:
    """Run ``python -m switchboard ARGS`` to its exit; the exit code, stdout and stderr."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "switchboard",
        *args,
        cwd=REPO_ROOT,
        env=environ,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(scaled(within_s)):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_presence_and_kick_reach_the_uids_on_every_gateway(stack: Stack) -> None:
    await stack.start_router()
    await asyncio.gather(stack.start_gateway(), stack.start_gateway())
    on_first = await stack.connect(0, uid="kim")
    on_second = await stack.connect(1, uid="kim")
    lee = await stack.connect(1, uid="lee")
    namespace = ("--namespace", stack.namespace)

    code, out, err = await switchboard("presence", "kim", "lee", "nobody", *namespace)
    assert (code, json.loads(out)) == (0, {"online": ["kim", "lee"]}), err

    code, out, err = await switchboard("kick", "kim", "--reason", "banned", *namespace)
    assert (code, json.loads(out)) == (0, {"kicked": 2}), err
    for client in (on_first, on_second):
        kicked = await client.expect("kicked")
        assert kicked == {"type": "kicked", "reason": "banned"}
        assert await client.wait_closed() == CloseCode.KICKED
    assert lee.close_code is None

    code, out, err = await switchboard("presence", "kim", "lee", *namespace)
    assert (code, json.loads(out)) == (0, {"online": ["lee"]}), err


async def test_a_namespace_without_services_is_an_error_not_a_wait(
    stack: Stack,
) -> None:
    code, out, err = await switchboard(
        "presence", "kim", "--namespace", stack.namespace, "--timeout-s", "2"
    )
    assert code == 1
    assert out == ""
    assert f"no exchange {stack.names.inbound_exchange}" in err


async def test_the_broker_url_comes_from_the_option(stack: Stack) -> None:
    code, _, err = await switchboard(
        "presence",
        "kim",
        "--namespace",
        stack.namespace,
        "--amqp-url",
        "amqp://nobody:wrong@127.0.0.1:5672/",
        "--timeout-s",
        "2",
    )
    assert code == 1
    assert "cannot connect to RabbitMQ" in err
    assert "wrong" not in err, "the password must not be printed"
