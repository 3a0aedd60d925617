"""The gateway's security settings: origins, rate limit, JWT algorithm and key, compression."""

from pathlib import Path

import pytest

from gateway.settings import Settings
from proto import env
from proto.errors import SettingsError
from tests.support.tokens import TEST_JWT_SECRET

BASE = {env.JWT_SECRET: TEST_JWT_SECRET}


def test_defaults_accept_any_origin_and_hs256() -> None:
    settings = Settings.from_env(BASE)
    assert settings.allowed_origins is None
    assert settings.jwt_algorithm == "HS256"
    assert (settings.rate_limit_per_s, settings.rate_limit_burst) == (50.0, 100)
    assert settings.compression is None


def test_compression_is_off_unless_configured() -> None:
    assert (
        Settings.from_env({**BASE, env.COMPRESSION: "deflate"}).compression == "deflate"
    )
    assert Settings.from_env({**BASE, env.COMPRESSION: "off"}).compression is None


def test_origins_rate_and_algorithm_are_read() -> None:
    settings = Settings.from_env(
        {
            **BASE,
            env.ALLOWED_ORIGINS: "https://a.example, http://localhost:3000",
            env.RATE_LIMIT_PER_S: "2.5",
            env.RATE_LIMIT_BURST: "7",
            env.JWT_ALGORITHM: "HS512",
            env.JWT_SECRET: TEST_JWT_SECRET * 2,
        }
    )
    assert settings.allowed_origins == ("https://a.example", "http://localhost:3000")
    assert (settings.rate_limit_per_s, settings.rate_limit_burst) == (2.5, 7)
    assert settings.jwt_algorithm == "HS512"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        (env.ALLOWED_ORIGINS, "a.example"),
        (env.ALLOWED_ORIGINS, "https://a.example/"),
        (env.RATE_LIMIT_PER_S, "0"),
        (env.RATE_LIMIT_PER_S, "fast"),
        (env.RATE_LIMIT_BURST, "0"),
        (env.COMPRESSION, "gzip"),
        (env.JWT_ALGORITHM, "none"),
        (env.JWT_ALGORITHM, "RS512"),
        (env.JWT_ALGORITHM, "RS256"),  # without SWITCHBOARD_JWT_PUBLIC_KEY
        (env.JWT_ALGORITHM, "HS512"),  # a secret shorter than 64 characters
    ],
)
def test_errors_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env({**BASE, variable: value})
    named = {"RS256": env.JWT_PUBLIC_KEY, "HS512": env.JWT_SECRET}.get(value, variable)
    assert named in str(error.value)


def test_a_public_key_that_is_not_a_key_is_an_error_without_its_text(
    tmp_path: Path,
) -> None:
    pytest.importorskip("cryptography")
    pem = tmp_path / "key.pem"
    pem.write_text("not-a-key-but-a-secret-looking-text")
    with pytest.raises(SettingsError) as error:
        Settings.from_env({env.JWT_ALGORITHM: "ES256", env.JWT_PUBLIC_KEY: str(pem)})
    assert env.JWT_PUBLIC_KEY in str(error.value)
    assert "secret-looking" not in str(error.value)


def test_a_public_key_file_is_read(tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    public_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        .decode()
    )
    pem = tmp_path / "key.pem"
    pem.write_text(public_pem)
    settings = Settings.from_env(
        {env.JWT_ALGORITHM: "ES256", env.JWT_PUBLIC_KEY: str(pem)}
    )
    assert (settings.jwt_algorithm, settings.jwt_secret) == ("ES256", public_pem)


def test_http_api_binds_its_own_host_or_the_gateways() -> None:
    with_api = {**BASE, env.HTTP_PORT: "8080", env.API_KEY: "k" * 16}
    default = Settings.from_env({**with_api, env.GATEWAY_HOST: "10.0.0.5"})
    assert (default.host, default.http_host) == ("10.0.0.5", "10.0.0.5")
    apart = Settings.from_env({**with_api, env.HTTP_HOST: "127.0.0.1"})
    assert (apart.host, apart.http_host) == ("0.0.0.0", "127.0.0.1")
