"""The gateway's identity settings: audience, issuer, leeway, JWKS, and public secrets refused."""

import pytest

from gateway.settings import Settings
from gateway.tokens import TokenRules
from proto import env, placeholders
from proto.errors import SettingsError
from tests.support.tokens import TEST_JWT_SECRET

BASE = {env.JWT_SECRET: TEST_JWT_SECRET}
JWKS = {env.JWKS_URL: "https://idp.example/realms/sb/protocol/openid-connect/certs"}
MAKEFILE_SECRET = "switchboard-development-secret-not-for-production"
K8S_PLACEHOLDER = "CHANGE-ME-to-at-least-32-random-characters"


def test_by_default_no_audience_no_issuer_no_leeway_and_no_jwks() -> None:
    settings = Settings.from_env(BASE)
    assert settings.token_rules == TokenRules("HS256", (), None, 0.0)
    assert settings.jwks_url is None


def test_audience_issuer_and_leeway_are_read() -> None:
    settings = Settings.from_env(
        {
            **BASE,
            env.JWT_AUDIENCE: "switchboard, account",
            env.JWT_ISSUER: "https://idp.example/realms/sb",
            env.JWT_LEEWAY_S: "30",
        }
    )
    assert settings.token_rules == TokenRules(
        "HS256", ("switchboard", "account"), "https://idp.example/realms/sb", 30.0
    )


@pytest.mark.parametrize("leeway", ["0", "0.5", "300"])
def test_a_leeway_from_0_to_300_seconds_is_accepted(leeway: str) -> None:
    settings = Settings.from_env({**BASE, env.JWT_LEEWAY_S: leeway})
    assert settings.jwt_leeway_s == float(leeway)


@pytest.mark.parametrize("leeway", ["-1", "301", "nan", "inf", "1m"])
def test_a_leeway_out_of_bounds_is_refused(leeway: str) -> None:
    with pytest.raises(SettingsError, match=f"^{env.JWT_LEEWAY_S} must be"):
        Settings.from_env({**BASE, env.JWT_LEEWAY_S: leeway})


def test_a_jwks_url_needs_no_secret_and_defaults_to_rs256() -> None:
    settings = Settings.from_env(JWKS)
    assert settings.jwks_url == JWKS[env.JWKS_URL]
    assert (settings.jwt_algorithm, settings.jwt_secret) == ("RS256", "")
    assert settings.jwks_refresh_s == 300.0
    assert settings.jwks_min_fetch_interval_s == 10.0
    assert Settings.from_env({**JWKS, env.JWT_ALGORITHM: "ES256"}).jwt_algorithm == (
        "ES256"
    )


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/certs", "http://localhost/certs", "http://[::1]/c"]
)
def test_a_jwks_url_over_http_is_accepted_on_loopback_only(url: str) -> None:
    assert Settings.from_env({env.JWKS_URL: url}).jwks_url == url


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({env.JWKS_URL: "http://idp.example/certs"}, "must be https"),
        ({env.JWKS_URL: "ftp://idp.example/certs"}, "must be an https URL"),
        ({env.JWKS_URL: "idp.example/certs"}, "must be an https URL"),
        ({env.JWT_ALGORITHM: "HS256"}, "must be one of RS256, ES256"),
        ({env.JWT_PUBLIC_KEY: "/etc/key.pem"}, "not both"),
        ({env.JWKS_MIN_FETCH_INTERVAL_S: "1", env.JWKS_TIMEOUT_S: "5"}, "between 5"),
        ({env.JWKS_MIN_FETCH_INTERVAL_S: "7200"}, "between"),
        ({env.JWKS_REFRESH_S: "0"}, "positive"),
    ],
)
def test_jwks_settings_out_of_bounds_are_refused(
    extra: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({**JWKS, **extra})


# Public secrets


@pytest.mark.parametrize(
    "secret",
    [
        MAKEFILE_SECRET,
        K8S_PLACEHOLDER,
        "please-change-me-0123456789abcdef0123",
        "CHANGEME-CHANGEME-CHANGEME-CHANGEME",
    ],
)
def test_a_public_placeholder_secret_does_not_start_a_gateway(secret: str) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({env.JWT_SECRET: secret})
    message = str(refused.value)
    assert message.startswith(f"{env.JWT_SECRET} is a public placeholder")
    assert env.DEVELOPMENT in message
    assert secret not in message


@pytest.mark.parametrize("secret", [MAKEFILE_SECRET, K8S_PLACEHOLDER])
def test_the_development_flag_accepts_the_placeholders(secret: str) -> None:
    settings = Settings.from_env({env.JWT_SECRET: secret, env.DEVELOPMENT: "on"})
    assert settings.jwt_secret == secret


def test_the_api_key_is_refused_when_it_is_a_placeholder() -> None:
    environ = {**BASE, env.HTTP_PORT: "0", env.API_KEY: K8S_PLACEHOLDER}
    with pytest.raises(SettingsError, match=f"^{env.API_KEY} is a public placeholder"):
        Settings.from_env(environ)
    on = Settings.from_env({**environ, env.DEVELOPMENT: "on"})
    assert on.api_key == K8S_PLACEHOLDER


@pytest.mark.parametrize("flag", ["yes", "1", "true", "ON"])
def test_the_development_flag_is_on_or_off(flag: str) -> None:
    with pytest.raises(SettingsError, match=f"^{env.DEVELOPMENT} must be one of"):
        Settings.from_env({env.JWT_SECRET: MAKEFILE_SECRET, env.DEVELOPMENT: flag})


def test_a_random_secret_is_not_a_placeholder() -> None:
    assert not placeholders.is_placeholder(TEST_JWT_SECRET)
    assert not placeholders.is_placeholder(
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822c"
    )
    assert placeholders.is_placeholder(MAKEFILE_SECRET)
    assert Settings.from_env({**BASE, env.DEVELOPMENT: "off"}).jwt_secret == (
        TEST_JWT_SECRET
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        (env.AMQP_URL, "amqp://switchboard:CHANGE-ME@rabbitmq:5672/"),
        (env.API_AMQP_URL, "amqp://api:change-me@rabbitmq:5672/"),
    ],
)
def test_a_placeholder_password_in_a_url_does_not_start_a_gateway(
    variable: str, value: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({**BASE, variable: value})
    assert str(refused.value).startswith(f"{variable} holds a public placeholder")
    assert "CHANGE-ME" not in str(refused.value)
    on = Settings.from_env({**BASE, variable: value, env.DEVELOPMENT: "on"})
    assert value in (on.amqp_url, on.api_amqp_url)


def test_urls_of_the_k8s_placeholder_secret_are_refused_for_every_dependency() -> None:
    for variable, value in [
        (env.REDIS_URL, "redis://:CHANGE-ME@redis:6379/0"),
        (env.POSTGRES_DSN, "postgresql://switchboard:CHANGE-ME@postgres:5432/sb"),
    ]:
        with pytest.raises(SettingsError, match=f"^{variable} holds a public"):
            env.url({variable: value}, variable, "")
        assert env.url({variable: value, env.DEVELOPMENT: "on"}, variable, "") == value
    plain = "amqp://guest:guest@127.0.0.1:5672/"
    assert env.url({}, env.AMQP_URL, plain) == plain
