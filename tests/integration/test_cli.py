"""``switchboard presence`` and ``switchboard kick`` against a real stack, as an operator runs
them: the command as a process, its reply on stdout, its exit code."""

import asyncio
import json
import os
import sys

import pytest

from proto.codes import CloseCode
from tests.support.processes import REPO_ROOT, start_service
from tests.support.stack import Stack
from tests.support.timing import scaled

pytestmark = pytest.mark.integration


async def switchboard(
    *args: str, within_s: float = 20.0, environ: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run ``python -m switchboard ARGS`` to its exit, with no ``SWITCHBOARD_*`` variable but
    those of ``environ``; the exit code, stdout and stderr."""
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")},
        **(environ or {}),
    }
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


@pytest.mark.parametrize(
    ("subcommand", "service"),
    [("router", "router"), ("offline-store", "offline_store")],
)
async def test_a_service_runs_until_sigterm_and_exits_0(
    stack: Stack, subcommand: str, service: str
) -> None:
    process = await start_service(subcommand, "switchboard", stack.env(), (subcommand,))
    ready = await process.wait_for_event("service_ready")
    assert ready["service"] == service
    assert await process.stop() == 0


async def test_a_service_exits_with_its_own_code_for_bad_settings() -> None:
    code, _, err = await switchboard(
        "gateway", environ={"SWITCHBOARD_NAMESPACE": "bad namespace"}
    )
    assert code == 2
    assert err.startswith("gateway: SWITCHBOARD_")
