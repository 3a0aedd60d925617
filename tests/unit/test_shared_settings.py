"""The settings every service shares (runtime/settings.py): read alike by the three services, with
the same defaults and bounds, and startup errors that never carry a password."""

import logging
from collections.abc import Callable, Mapping

import pytest

from gateway.settings import Settings as GatewaySettings
from offline_store.settings import Settings as StoreSettings
from proto import env
from proto.errors import SettingsError
from router.settings import Settings as RouterSettings
from runtime.nodes import node_urls
from runtime.settings import (
    DEFAULT_EVENT_LOOP,
    EVENT_LOOPS,
    LOG_LEVELS,
    MAX_PREFETCH,
    ServiceSettings,
)
from runtime.startup import loop_factory, mask_password, unavailable

GATEWAY_ENV = {env.JWT_SECRET: "a-development-secret-of-32-chars!"}

FromEnv = Callable[[Mapping[str, str]], ServiceSettings]
SERVICES: dict[str, FromEnv] = {
    "gateway": lambda environ: GatewaySettings.from_env({**GATEWAY_ENV, **environ}),
    "router": RouterSettings.from_env,
    "offline_store": StoreSettings.from_env,
}


@pytest.mark.parametrize("from_env", SERVICES.values(), ids=SERVICES.keys())
def test_defaults_are_the_same_in_every_service(from_env: FromEnv) -> None:
    settings = from_env({})
    assert settings.namespace == "switchboard"
    assert settings.amqp_url == env.DEFAULT_AMQP_URL
    assert settings.queue_type == "quorum"
    assert settings.log_level == "info"
    assert settings.prefetch == 1000
    assert settings.publish_timeout_s == 5.0
    assert settings.connect_timeout_s == 5.0
    assert settings.shutdown_timeout_s == 10.0
    assert settings.metrics_port is None
    assert settings.history is True
    assert settings.event_loop == DEFAULT_EVENT_LOOP


@pytest.mark.parametrize("from_env", SERVICES.values(), ids=SERVICES.keys())
def test_shared_variables_are_read_alike(from_env: FromEnv) -> None:
    settings = from_env(
        {
            env.NAMESPACE: "t1",
            env.QUEUE_TYPE: "classic",
            env.LOG_LEVEL: "debug",
            env.PREFETCH: str(MAX_PREFETCH),
            env.METRICS_PORT: "0",
            env.MAX_AMQP_MESSAGE_BYTES: "1048576",
            env.HISTORY: "off",
            env.EVENT_LOOP: "asyncio",
        }
    )
    assert settings.names.namespace == "t1"
    assert settings.queue_type == "classic"
    assert settings.log_level == "debug"
    assert settings.prefetch == MAX_PREFETCH
    assert settings.metrics_port == 0
    assert settings.max_amqp_message_bytes == 1_048_576
    assert settings.history is False
    assert settings.event_loop == "asyncio"


@pytest.mark.parametrize("from_env", SERVICES.values(), ids=SERVICES.keys())
@pytest.mark.parametrize(
    ("variable", "value"),
    [
        (env.PREFETCH, str(MAX_PREFETCH + 1)),
        (env.LOG_LEVEL, "verbose"),
        (env.QUEUE_TYPE, "mirrored"),
        (env.NAMESPACE, "Bad-Namespace"),
        (env.METRICS_PORT, "65536"),
        (env.HISTORY, "yes"),
        (env.EVENT_LOOP, "trio"),
    ],
)
def test_every_service_refuses_the_same_values(
    from_env: FromEnv, variable: str, value: str
) -> None:
    with pytest.raises(SettingsError, match=variable):
        from_env({variable: value})


def test_every_log_level_is_one_the_logging_setup_knows() -> None:
    known = logging.getLevelNamesMapping()
    assert all(level.upper() in known for level in LOG_LEVELS)


def test_each_event_loop_is_made_by_its_own_factory() -> None:
    assert set(EVENT_LOOPS) == {"uvloop", "asyncio"}
    assert loop_factory("asyncio") is None  # asyncio's default loop
    uvloop_factory = loop_factory("uvloop")
    assert uvloop_factory is not None
    loop = uvloop_factory()
    try:
        assert type(loop).__module__.startswith("uvloop")
    finally:
        loop.close()


def test_a_startup_error_never_carries_the_password() -> None:
    url = "amqp://guest:s%40cret@127.0.0.1:5672/"
    error = unavailable(
        "RabbitMQ", url, OSError("refused by s@cret\nsecond line"), "start it"
    )
    line = str(error)
    assert "s@cret" not in line
    assert "s%40cret" not in line
    assert "\n" not in line
    assert error.where == "127.0.0.1:5672"
    assert error.hint.endswith("; start it")


def test_mask_password_leaves_text_without_a_password_alone() -> None:
    assert mask_password("timed out", "amqp://127.0.0.1/") == "timed out"
    assert mask_password("timed out", "not a [url") == "timed out"


def test_the_gateway_queue_type_is_classic_unless_set_to_quorum() -> None:
    assert GatewaySettings.from_env(GATEWAY_ENV).gateway_queue_type == "classic"
    quorum = {**GATEWAY_ENV, env.GATEWAY_QUEUE_TYPE: "quorum"}
    assert GatewaySettings.from_env(quorum).gateway_queue_type == "quorum"
    with pytest.raises(SettingsError, match=env.GATEWAY_QUEUE_TYPE):
        GatewaySettings.from_env({**GATEWAY_ENV, env.GATEWAY_QUEUE_TYPE: "stream"})


def test_several_amqp_nodes_are_read_from_one_url_list() -> None:
    assert node_urls("amqp://a:5672/") == ["amqp://a:5672/"]
    assert node_urls(" amqp://a:5672/, amqp://b:5672/ ,amqp://c:5672/") == [
        "amqp://a:5672/",
        "amqp://b:5672/",
        "amqp://c:5672/",
    ]
