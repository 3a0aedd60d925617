"""Startup: an unreachable dependency or a bad setting gives one clear line and an exit code."""

import aio_pika
import pytest

from proto import env
from proto.topology import shared_topology
from runtime.bus import declare
from tests.support.processes import run_until_exit
from tests.support.stack import Stack, free_port

pytestmark = pytest.mark.integration

SERVICES = ("gateway", "router", "offline_store")
SECRET = "do-not-print-this-password"


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("module", SERVICES)
async def test_unreachable_rabbitmq_exits_1_with_one_line(
    stack: Stack, module: str
) -> None:
    url = f"amqp://guest:{SECRET}@127.0.0.1:{free_port()}/"
    code, stdout, stderr = await run_until_exit(
        module, stack.env(**{env.AMQP_URL: url})
    )
    assert code == 1
    line = one_line(stderr)
    assert "RabbitMQ" in line
    assert "rabbitmq-server -detached" in line
    assert SECRET not in stdout + stderr
    assert "service_ready" not in stdout


async def test_unreachable_redis_exits_1_with_one_line(stack: Stack) -> None:
    url = f"redis://:{SECRET}@127.0.0.1:{free_port()}/0"
    code, stdout, stderr = await run_until_exit(
        "router", stack.env(**{env.REDIS_URL: url})
    )
    assert code == 1
    line = one_line(stderr)
    assert "Redis" in line
    assert "redis-server" in line
    assert SECRET not in stdout + stderr


async def test_unreachable_postgresql_exits_1_with_one_line(stack: Stack) -> None:
    dsn = f"postgresql://postgres:{SECRET}@127.0.0.1:{free_port()}/postgres"
    code, stdout, stderr = await run_until_exit(
        "offline_store", stack.env(**{env.POSTGRES_DSN: dsn})
    )
    assert code == 1
    line = one_line(stderr)
    assert "PostgreSQL" in line
    assert "pg_ctlcluster" in line
    assert SECRET not in stdout + stderr


@pytest.mark.parametrize(
    ("module", "variable", "value"),
    [
        ("gateway", env.JWT_SECRET, ""),
        ("gateway", env.JWT_SECRET, "too-short"),
        # Public: the Makefile's development secret, k8s/base/secret.yaml's placeholders.
        (
            "gateway",
            env.JWT_SECRET,
            "switchboard-development-secret-not-for-production",
        ),
        ("gateway", env.JWT_SECRET, "CHANGE-ME-to-at-least-32-random-characters"),
        ("router", env.REDIS_URL, "redis://:CHANGE-ME@127.0.0.1:6379/0"),
        ("offline_store", env.POSTGRES_DSN, "postgresql://sb:CHANGE-ME@127.0.0.1/sb"),
        ("gateway", env.GATEWAY_PORT, "eighty"),
        ("gateway", env.IDLE_TIMEOUT_S, "1m"),
        ("router", env.QUEUE_TYPE, "mirrored"),
        ("router", env.DEDUP_TTL_S, "-1"),
        ("offline_store", env.BATCH_MAX, "many"),
        ("offline_store", env.NAMESPACE, "Bad-Namespace"),
    ],
)
async def test_unusable_setting_exits_2_naming_the_variable(
    stack: Stack, module: str, variable: str, value: str
) -> None:
    code, stdout, stderr = await run_until_exit(module, stack.env(**{variable: value}))
    assert code == 2
    assert variable in one_line(stderr)
    assert "service_ready" not in stdout


@pytest.mark.parametrize("module", SERVICES)
async def test_shared_queues_of_another_type_exit_2_naming_the_variable(
    stack: Stack, module: str
) -> None:
    # As a deployment that ran with quorum queues leaves them behind (removed at teardown).
    connection = await aio_pika.connect(env.DEFAULT_AMQP_URL, timeout=10)
    async with connection:
        channel = await connection.channel()
        await declare(channel, shared_topology(stack.names, "quorum"), timeout_s=10)
    code, stdout, stderr = await run_until_exit(
        module, stack.env(**{env.QUEUE_TYPE: "classic"})
    )
    assert code == 2
    line = one_line(stderr)
    assert env.QUEUE_TYPE in line
    assert "service_ready" not in stdout
