"""The router's settings: defaults, overrides, and errors that name the variable."""

import pytest

from proto import env
from proto.errors import SettingsError
from proto.names import Names
from router.settings import Settings


def test_defaults() -> None:
    settings = Settings.from_env({})

    assert settings.amqp_url == env.DEFAULT_AMQP_URL
    assert settings.redis_url == env.DEFAULT_REDIS_URL
    assert settings.names == Names("switchboard")
    assert settings.queue_type == "quorum"
    assert (settings.prefetch, settings.batch_max) == (1000, 500)
    assert settings.dedup_ttl_s == 600
    assert (settings.gateway_ttl_s, settings.heartbeat_interval_s) == (15.0, 5.0)
    assert settings.publish_timeout_s == settings.connect_timeout_s == 5.0
    assert settings.shutdown_timeout_s == 10.0
    assert settings.log_level == "info"


def test_overrides() -> None:
    settings = Settings.from_env(
        {
            env.NAMESPACE: "t1",
            env.QUEUE_TYPE: "classic",
            env.BATCH_MAX: "50",
            env.GATEWAY_TTL_S: "0.5",
            env.LOG_LEVEL: "debug",
        }
    )

    assert settings.namespace == "t1"
    assert settings.queue_type == "classic"
    assert settings.batch_max == 50
    assert settings.gateway_ttl_s == 0.5
    assert settings.log_level == "debug"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        (env.NAMESPACE, "Bad-Name"),
        (env.QUEUE_TYPE, "mirrored"),
        (env.PREFETCH, "0"),
        (env.BATCH_MAX, "many"),
        (env.GATEWAY_TTL_S, "15s"),
        (env.HEARTBEAT_INTERVAL_S, "-1"),
        (env.LOG_LEVEL, "loud"),
    ],
)
def test_errors_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: value})


def test_connection_and_command_limits() -> None:
    assert Settings.from_env({}).max_connections_per_uid == 20
    settings = Settings.from_env(
        {env.MAX_CONNECTIONS_PER_UID: "3", env.MAX_COMMAND_BYTES: "4096"}
    )
    assert (settings.max_connections_per_uid, settings.max_command_bytes) == (3, 4096)
    with pytest.raises(SettingsError, match=env.MAX_CONNECTIONS_PER_UID):
        Settings.from_env({env.MAX_CONNECTIONS_PER_UID: "many"})


def test_redis_through_sentinels() -> None:
    settings = Settings.from_env(
        {
            env.REDIS_SENTINELS: "10.0.0.1:26379, sentinel-2:26379,[::1]:26380",
            env.REDIS_MASTER: "switchboard",
        }
    )

    assert settings.redis_sentinels == (
        ("10.0.0.1", 26379),
        ("sentinel-2", 26379),
        ("::1", 26380),
    )
    assert settings.redis_master == "switchboard"
    assert Settings.from_env({}).redis_sentinels == ()


@pytest.mark.parametrize(
    "environ",
    [
        {env.REDIS_SENTINELS: "10.0.0.1:26379"},
        {env.REDIS_MASTER: "switchboard"},
        {env.REDIS_SENTINELS: "10.0.0.1", env.REDIS_MASTER: "switchboard"},
        {env.REDIS_SENTINELS: "10.0.0.1:0", env.REDIS_MASTER: "switchboard"},
        {env.REDIS_SENTINELS: ":26379", env.REDIS_MASTER: "switchboard"},
    ],
)
def test_sentinel_settings_are_complete_or_refused(environ: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="SWITCHBOARD_REDIS_"):
        Settings.from_env(environ)


@pytest.mark.parametrize(
    ("value", "is_cluster"),
    [("", False), ("true", True), ("on", True), ("TRUE", True), ("false", False)],
)
def test_redis_cluster(value: str, is_cluster: bool) -> None:
    settings = Settings.from_env({env.REDIS_CLUSTER: value})
    assert settings.redis_cluster is is_cluster


@pytest.mark.parametrize(
    "environ",
    [
        {env.REDIS_CLUSTER: "yes"},
        {
            env.REDIS_CLUSTER: "true",
            env.REDIS_SENTINELS: "10.0.0.1:26379",
            env.REDIS_MASTER: "switchboard",
        },
    ],
)
def test_redis_cluster_settings_are_refused(environ: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match=env.REDIS_CLUSTER):
        Settings.from_env(environ)
