import os
from collections.abc import AsyncIterator, Generator

import pytest

from proto import env
from tests.chaos.faults import CuttableProxy
from tests.support.api import Backend, open_backend
from tests.support.stack import Stack, new_namespace

AMQP_PORT = 5672
"""The machine's RabbitMQ, behind the ``proxy`` fixture."""


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def pytest_runtest_setup(item: pytest.Item) -> None:
    """An ``exclusive`` test restarts what the machine shares: never beside other tests."""
    if item.get_closest_marker("exclusive") and "PYTEST_XDIST_WORKER" in os.environ:
        pytest.fail(
            "exclusive tests run alone: `pytest -m exclusive`, without -n (make test does)",
            pytrace=False,
        )


@pytest.fixture
def namespace() -> str:
    return new_namespace()


@pytest.fixture
async def stack(request: pytest.FixtureRequest, namespace: str) -> AsyncIterator[Stack]:
    """An empty stack in a fresh namespace; the test starts the processes it needs."""
    stack = Stack(namespace)
    yield stack
    failed = getattr(request.node, "report_call", None)
    problems = await stack.close()
    if failed is not None and failed.failed:
        print(stack.output())
    assert not problems, f"{problems}\n{stack.output()}"


@pytest.fixture
def history(stack: Stack) -> Stack:
    """The stack with ``SWITCHBOARD_HISTORY=on`` for every service it starts: the default,
    said explicitly by the tests of history, whatever the environment says."""
    stack.settings[env.HISTORY] = "on"
    return stack


@pytest.fixture
def no_history(stack: Stack) -> Stack:
    """The stack with ``SWITCHBOARD_HISTORY=off`` for every service it starts: the relay,
    for tests of what a namespace without history does."""
    stack.settings[env.HISTORY] = "off"
    return stack


@pytest.fixture
async def backend(stack: Stack) -> AsyncIterator[Backend]:
    """A backend service on the stack's namespace: AMQP commands with replies, events."""
    async with open_backend(stack.names) as service:
        yield service


@pytest.fixture
async def proxy() -> AsyncIterator[CuttableProxy]:
    """A proxy to the machine's RabbitMQ that a test can cut or hold (tests/chaos/faults.py)."""
    proxy = CuttableProxy(AMQP_PORT)
    await proxy.start()
    yield proxy
    proxy.release()  # a held link passes again, so that the stack can stop
    await proxy.close()
