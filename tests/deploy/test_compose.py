"""docker-compose.yml as a demo that is safe to leave running on a laptop: the credentials
(none is guest/guest, each public default is one the services refuse outside development), the
RabbitMQ plugins, Redis persistence, PostgreSQL's password authentication, the web page, and the
services' settings read from the file's own environment. Offline: no Docker needed
(test_deploy_files.py validates the file against the Compose specification).
"""

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.settings import Settings as GatewaySettings
from offline_store.settings import Settings as StoreSettings
from proto import env
from proto.errors import SettingsError
from proto.placeholders import is_placeholder
from router.settings import Settings as RouterSettings
from tests.deploy.tools import ROOT

COMPOSE = ROOT / "docker-compose.yml"
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?[-?]([^}]*))?\}")
SERVICES = ("router", "offline-store", "gateway-1", "gateway-2")
DEVELOPMENT_SECRET = "switchboard-development-secret-not-for-production"


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, Any]:
    return compose()["services"]


def resolved(value: str, variables: Mapping[str, str] | None = None) -> str:
    """A value as `docker compose` interpolates it from ``variables`` (else the defaults)."""
    given = variables or {}

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2) or ""
        return given.get(name, default)

    return INTERPOLATION.sub(substitute, value).replace("$$", "$")


def environment(
    service: str, variables: Mapping[str, str] | None = None
) -> dict[str, str]:
    raw = services()[service].get("environment", {})
    return {key: resolved(str(value), variables) for key, value in raw.items()}


def test_no_guest_account_anywhere() -> None:
    assert "guest" not in COMPOSE.read_text()
    rabbitmq = environment("rabbitmq")
    assert rabbitmq["RABBITMQ_DEFAULT_USER"] == "switchboard"
    for service in SERVICES:
        url = urlsplit(environment(service)[env.AMQP_URL])
        assert (url.username, url.password) == (
            rabbitmq["RABBITMQ_DEFAULT_USER"],
            rabbitmq["RABBITMQ_DEFAULT_PASS"],
        ), service


def test_each_public_default_is_refused_outside_development() -> None:
    defaults = [
        environment("rabbitmq")["RABBITMQ_DEFAULT_PASS"],
        environment("redis")["REDISCLI_AUTH"],
        environment("postgres")["POSTGRES_PASSWORD"],
        environment("gateway-1")[env.JWT_SECRET],
        environment("gateway-1")[env.API_KEY],
        environment("web")[env.JWT_SECRET],
    ]
    assert all(is_placeholder(value) for value in defaults), defaults
    for service in SERVICES:
        assert environment(service)[env.DEVELOPMENT] == "on", service
        assert environment(service, {"SWITCHBOARD_DEVELOPMENT": "off"})[
            env.DEVELOPMENT
        ] == ("off")


SETTINGS_OF = [
    ("router", RouterSettings.from_env),
    ("offline-store", StoreSettings.from_env),
    ("gateway-1", GatewaySettings.from_env),
    ("gateway-2", GatewaySettings.from_env),
]


@pytest.mark.parametrize(("service", "from_env"), SETTINGS_OF)
def test_every_service_keeps_history_unless_the_environment_says_off(
    service: str, from_env: Any
) -> None:
    assert from_env(environment(service)).history is True
    relay = environment(service, {"SWITCHBOARD_HISTORY": "off"})
    assert from_env(relay).history is False


@pytest.mark.parametrize(("service", "from_env"), SETTINGS_OF)
def test_the_services_start_with_the_defaults_in_development_only(
    service: str, from_env: Any
) -> None:
    from_env(environment(service))
    with pytest.raises(SettingsError, match="placeholder"):
        from_env(environment(service, {"SWITCHBOARD_DEVELOPMENT": "off"}))
    real = {
        "SWITCHBOARD_DEVELOPMENT": "off",
        **{
            name: "0123456789abcdef" * 4
            for name in (
                "SWITCHBOARD_JWT_SECRET",
                "SWITCHBOARD_API_KEY",
                "SWITCHBOARD_RABBITMQ_PASSWORD",
                "SWITCHBOARD_REDIS_PASSWORD",
                "SWITCHBOARD_POSTGRES_PASSWORD",
            )
        },
    }
    from_env(environment(service, real))


def test_rabbitmq_enables_management_and_prometheus_from_a_mounted_file() -> None:
    rabbitmq = services()["rabbitmq"]
    sources = {
        volume.split(":")[1]: volume.split(":")[0]
        for volume in rabbitmq["volumes"]
        if volume.endswith(":ro")
    }
    source = sources["/etc/rabbitmq/enabled_plugins"]
    text = (ROOT / source).read_text()
    # An Erlang term: a list of plugin names, ended by a full stop.
    match = re.fullmatch(r"\[([a-z_,\s]*)\]\.\s*", text)
    assert match, text
    plugins = {name.strip() for name in match.group(1).split(",")}
    assert plugins == {"rabbitmq_management", "rabbitmq_prometheus"}
    assert "127.0.0.1:15692:15692" in rabbitmq["ports"]
    assert "rabbitmq-data:/var/lib/rabbitmq" in rabbitmq["volumes"]
    assert rabbitmq["hostname"] == "rabbitmq"


def test_every_published_port_is_on_loopback() -> None:
    for name, service in services().items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)


def test_redis_persists_to_its_volume_behind_the_password() -> None:
    redis = services()["redis"]
    command = [resolved(str(part)) for part in redis["command"]]
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "everysec"
    assert options["--save"]
    assert "redis-data:/data" in redis["volumes"]
    for service in ("router",):
        url = urlsplit(environment(service)[env.REDIS_URL])
        assert (
            url.password
            == options["--requirepass"]
            == environment("redis")["REDISCLI_AUTH"]
        )


def test_postgresql_asks_for_a_password_and_the_dsn_has_it() -> None:
    postgres = environment("postgres")
    assert postgres["POSTGRES_HOST_AUTH_METHOD"] == "scram-sha-256"
    dsn = urlsplit(environment("offline-store")[env.POSTGRES_DSN])
    assert (dsn.username, dsn.password, dsn.path) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        f"/{postgres['POSTGRES_DB']}",
    )
    assert "postgres-data:/var/lib/postgresql/data" in services()["postgres"]["volumes"]


def test_the_web_page_serves_the_gateways_and_development_tokens() -> None:
    web = services()["web"]
    assert web["entrypoint"] == ["python", "scripts/run_stack.py"]
    args = web["command"]
    assert args[:3] == ["--web-only", "--web-host", "0.0.0.0"]
    urls = [args[i + 1] for i, arg in enumerate(args) if arg == "--gateway-url"]
    published = [
        port.split(":")[1]
        for gateway in ("gateway-1", "gateway-2")
        for port in services()[gateway]["ports"]
        if port.endswith(":8000")
    ]
    assert urls == [f"ws://localhost:{port}/ws" for port in published]
    # The token endpoint signs with the development secret only, the gateways' default.
    assert environment("web")[env.JWT_SECRET] == DEVELOPMENT_SECRET
    assert environment("gateway-1")[env.JWT_SECRET] == DEVELOPMENT_SECRET
    assert f'DEVELOPMENT_JWT_SECRET = "{DEVELOPMENT_SECRET}"' in (
        (ROOT / "scripts" / "run_stack.py").read_text()
    )
    for volume in web["volumes"]:
        source, target, mode = volume.split(":")
        assert (ROOT / source).exists(), source
        assert target.startswith("/app/")
        assert mode == "ro"
    assert "healthcheck" in web
    assert set(web["depends_on"]) == {"gateway-1", "gateway-2"}
