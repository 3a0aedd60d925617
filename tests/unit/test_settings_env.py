"""The environment readers of proto/env.py: defaults, bounds, and errors that name the variable."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proto import env
from proto.errors import SettingsError

NAME = "SWITCHBOARD_EXAMPLE"


def test_every_variable_is_a_switchboard_variable() -> None:
    variables = {
        value
        for key, value in vars(env).items()
        if key.isupper() and not key.startswith("DEFAULT_")
    }
    assert len(variables) >= 25
    assert all(v.startswith("SWITCHBOARD_") and v.isupper() for v in variables)
    assert len(variables) == len(
        [k for k in vars(env) if k.isupper() and not k.startswith("DEFAULT_")]
    )


# --- text -----------------------------------------------------------------------------


def test_text_returns_the_value() -> None:
    assert env.text({NAME: "amqp://h/"}, NAME, default="x") == "amqp://h/"


@pytest.mark.parametrize("environ", [{}, {NAME: ""}])
def test_text_falls_back_to_the_default(environ: dict[str, str]) -> None:
    assert env.text(environ, NAME, default="fallback") == "fallback"


@pytest.mark.parametrize("environ", [{}, {NAME: ""}])
def test_text_without_default_is_required(environ: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match=f"^{NAME} must be set$"):
        env.text(environ, NAME)


# --- secret ---------------------------------------------------------------------------


def test_secret_returns_the_value() -> None:
    assert env.secret({NAME: "s" * 16}, NAME) == "s" * 16


@pytest.mark.parametrize("environ", [{}, {NAME: ""}])
def test_missing_secret_is_an_error_naming_the_variable(
    environ: dict[str, str],
) -> None:
    with pytest.raises(SettingsError, match=NAME):
        env.secret(environ, NAME)


@pytest.mark.parametrize("value", ["hunter2", "short-secret-15", "0123456789abcde"])
def test_short_secret_error_never_shows_the_value(value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        env.secret({NAME: value}, NAME)
    assert NAME in str(caught.value)
    assert "16" in str(caught.value)
    assert value not in str(caught.value)
    assert value not in repr(caught.value)
    assert all(value not in str(arg) for arg in caught.value.args)


@given(
    st.text(
        alphabet=st.characters(codec="utf-8", categories=["Ll", "Nd"]),
        min_size=3,
        max_size=30,
    )
)
def test_secret_error_never_shows_the_value(suffix: str) -> None:
    value = "q" + suffix  # no error message of env.secret contains a "q"
    with pytest.raises(SettingsError) as caught:
        env.secret({NAME: value}, NAME, min_length=32)
    assert value not in str(caught.value)


def test_secret_min_length_is_configurable() -> None:
    assert env.secret({NAME: "abcd"}, NAME, min_length=4) == "abcd"
    with pytest.raises(SettingsError, match="at least 5"):
        env.secret({NAME: "abcd"}, NAME, min_length=5)


# --- integer --------------------------------------------------------------------------


def test_integer_default_and_value() -> None:
    assert env.integer({}, NAME, 42) == 42
    assert env.integer({NAME: ""}, NAME, 42) == 42
    assert env.integer({NAME: "7"}, NAME, 42) == 7
    assert env.integer({NAME: " 8 "}, NAME, 42) == 8


@pytest.mark.parametrize("raw", ["1.5", "ten", "1e3", "0x10"])
def test_integer_rejects_non_integers(raw: str) -> None:
    with pytest.raises(SettingsError, match=f"^{NAME} must be an integer, got '"):
        env.integer({NAME: raw}, NAME, 1)


def test_integer_bounds_are_inclusive() -> None:
    assert env.integer({NAME: "1"}, NAME, 5, minimum=1, maximum=10) == 1
    assert env.integer({NAME: "10"}, NAME, 5, minimum=1, maximum=10) == 10


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("0", "at least 1 and at most 10, got 0"),
        ("11", "at least 1 and at most 10, got 11"),
        ("-3", "at least 1 and at most 10, got -3"),
    ],
)
def test_integer_out_of_bounds_names_the_bounds(raw: str, message: str) -> None:
    with pytest.raises(SettingsError, match=f"^{NAME} must be {message}$"):
        env.integer({NAME: raw}, NAME, 5, minimum=1, maximum=10)


def test_integer_minimum_defaults_to_zero() -> None:
    with pytest.raises(SettingsError, match=r"at least 0, got -1$"):
        env.integer({NAME: "-1"}, NAME, 5)


# --- seconds --------------------------------------------------------------------------


def test_seconds_default_and_value() -> None:
    assert env.seconds({}, NAME, 60.0) == 60.0
    assert env.seconds({NAME: ""}, NAME, 60.0) == 60.0
    assert env.seconds({NAME: "0.5"}, NAME, 60.0) == 0.5
    assert env.seconds({NAME: "2"}, NAME, 60.0) == 2.0


def test_seconds_error_reads_as_documented() -> None:
    with pytest.raises(SettingsError) as caught:
        env.seconds({env.IDLE_TIMEOUT_S: "1m"}, env.IDLE_TIMEOUT_S, 60.0)
    assert str(caught.value) == (
        "SWITCHBOARD_IDLE_TIMEOUT_S must be a number of seconds, got '1m'"
    )


@pytest.mark.parametrize("raw", ["0", "-1", "-0.1", "nan", "inf"])
def test_seconds_must_be_positive_and_finite(raw: str) -> None:
    with pytest.raises(
        SettingsError, match=f"^{NAME} must be a positive, finite number"
    ):
        env.seconds({NAME: raw}, NAME, 1.0)


# --- choice ---------------------------------------------------------------------------


def test_choice_default_and_value() -> None:
    choices = ("quorum", "classic")
    assert env.choice({}, NAME, choices, "quorum") == "quorum"
    assert env.choice({NAME: ""}, NAME, choices, "quorum") == "quorum"
    assert env.choice({NAME: "classic"}, NAME, choices, "quorum") == "classic"


def test_choice_error_lists_the_choices() -> None:
    with pytest.raises(SettingsError) as caught:
        env.choice({NAME: "stream"}, NAME, ("quorum", "classic"), "quorum")
    assert str(caught.value) == (f"{NAME} must be one of quorum, classic, got 'stream'")


def test_choice_is_case_sensitive() -> None:
    with pytest.raises(SettingsError, match=NAME):
        env.choice({NAME: "Quorum"}, NAME, ("quorum", "classic"), "quorum")


def test_default_urls_point_at_local_services() -> None:
    assert env.DEFAULT_AMQP_URL == "amqp://guest:guest@127.0.0.1:5672/"
    assert env.DEFAULT_REDIS_URL == "redis://127.0.0.1:6379/0"
    assert env.DEFAULT_POSTGRES_DSN == "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("amqp://guest:s3cret@rabbit.example:5672/vhost", "rabbit.example:5672"),
        ("postgresql://u:p%40ss@db/x", "db"),
        ("redis://:s3cret@127.0.0.1:6379/0", "127.0.0.1:6379"),
        ("redis://cache.example/0", "cache.example"),
        ("unix:///run/redis.sock", "/run/redis.sock"),
        ("http://[::1", "an unparsable URL"),
        (
            "postgresql://u:p@db1:5432,db2:5433/x?target_session_attrs=read-write",
            "db1:5432,db2:5433",
        ),
    ],
)
def test_location_leaves_out_credentials(url: str, where: str) -> None:
    assert env.location(url) == where
