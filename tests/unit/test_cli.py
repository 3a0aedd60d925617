"""The ``switchboard`` command line: what each subcommand asks for, and what it refuses."""

import json
import tomllib
from pathlib import Path

import jwt
import pytest

from proto import env
from proto.frames import MAX_PRESENCE_UIDS
from switchboard import __main__ as entry
from switchboard.cli import (
    COMMAND_TIMEOUT_S,
    Migrate,
    MintToken,
    RunService,
    SendCommand,
    ShowTopology,
    parse,
    render_topology,
)
from switchboard.dev_token import TTL_S, make_token

ROOT = Path(__file__).resolve().parents[2]
VERSION = "1.2.3"


def parsed(*argv: str, **environ: str) -> object:
    return parse(argv, environ, VERSION)


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        parse(argv, {}, VERSION)
    assert exit_.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("subcommand", "module"),
    [("gateway", "gateway"), ("router", "router"), ("offline-store", "offline_store")],
)
def test_each_service_runs_as_its_module(subcommand: str, module: str) -> None:
    assert parsed(subcommand) == RunService(module)


def test_migrate_takes_its_settings_from_the_environment(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert parsed("migrate") == Migrate()
    assert "unrecognized arguments" in refused(capsys, "migrate", "--dsn", "x")


def test_version_comes_from_the_argument(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse(["--version"], {}, VERSION)
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"switchboard {VERSION}\n"


def test_a_subcommand_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    assert "required" in refused(capsys)
    assert "invalid choice" in refused(capsys, "serve")


def test_token_takes_a_uid_and_a_validity() -> None:
    assert parsed("token", "alice") == MintToken("alice", TTL_S)
    assert parsed("token", "auth0|abc", "--ttl-s", "60") == MintToken("auth0|abc", 60.0)


@pytest.mark.parametrize(
    "argv",
    [
        ("token", "a b"),
        ("token", "alice", "--ttl-s", "0"),
        ("token", "alice", "--ttl-s", "inf"),
        ("token", "alice", "--ttl-s", "soon"),
        ("kick", "x" * 129),
        ("presence",),
        ("presence", "ok", "not:ok"),
        ("kick", "kim", "--namespace", "bad namespace"),
        ("kick", "kim", "--timeout-s", "-1"),
    ],
)
def test_bad_arguments_exit_2_with_a_usage_line(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    assert "usage: switchboard" in refused(capsys, *argv)


def test_kick_is_the_api_kick_command_with_its_reason() -> None:
    request = parsed("kick", "kim", "--reason", "banned")
    assert isinstance(request, SendCommand)
    assert (request.command, request.routing_key) == ("kick", "api.kick")
    assert json.loads(request.body) == {"uid": "kim", "reason": "banned"}
    assert request.timeout_s == COMMAND_TIMEOUT_S


def test_presence_asks_about_every_uid_given() -> None:
    request = parsed("presence", "kim", "lee")
    assert isinstance(request, SendCommand)
    assert request.routing_key == "api.presence"
    assert json.loads(request.body) == {"uids": ["kim", "lee"]}


def test_presence_refuses_more_uids_than_a_command_takes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    uids = [f"u{i}" for i in range(MAX_PRESENCE_UIDS + 1)]
    assert f"at most {MAX_PRESENCE_UIDS}" in refused(capsys, "presence", *uids)
    assert isinstance(parsed("presence", *uids[:-1]), SendCommand)


def test_the_broker_and_namespace_default_to_the_services_settings() -> None:
    default = parsed("presence", "kim")
    assert isinstance(default, SendCommand)
    assert (default.amqp_url, default.namespace) == (
        env.DEFAULT_AMQP_URL,
        "switchboard",
    )

    services = {env.AMQP_URL: "amqp://a:b@mq/", env.NAMESPACE: "chat"}
    from_env = parsed("presence", "kim", **services)
    assert isinstance(from_env, SendCommand)
    assert (from_env.amqp_url, from_env.namespace) == ("amqp://a:b@mq/", "chat")

    # The HTTP API's broker user (api.* only) is the one meant for commands.
    api = parsed("kick", "kim", **services, **{env.API_AMQP_URL: "amqp://api:c@mq/"})
    assert isinstance(api, SendCommand)
    assert api.amqp_url == "amqp://api:c@mq/"

    given = parsed(
        "kick", "kim", "--amqp-url", "amqp://x:y@z/", "--namespace", "n2", **services
    )
    assert isinstance(given, SendCommand)
    assert (given.amqp_url, given.namespace) == ("amqp://x:y@z/", "n2")


def test_topology_lists_what_the_services_declare() -> None:
    request = parsed("topology", "--namespace", "chat")
    assert isinstance(request, ShowTopology)
    lines = render_topology(request)
    assert lines[0] == "# namespace chat"
    assert (
        "queue    chat.router x-dead-letter-exchange=chat.dead-letter "
        "x-delivery-limit=20 x-queue-type=quorum"
    ) in lines
    assert "binding  chat.inbound --api.#--> chat.router" in lines
    assert 'binding  chat.undeliverable --""--> chat.offline' in lines
    assert "binding  chat.inbound --gateway.handover--> chat.offline" in lines
    assert (
        "exchange chat.deliveries direct alternate-exchange=chat.undeliverable" in lines
    )
    assert lines[-1].startswith("# and one classic queue per gateway, chat.gateway.")
    # History is on unless the environment says otherwise: the store's inbox queue.
    assert any(line.startswith("queue    chat.inbox ") for line in lines)


def test_topology_follows_the_queue_type_and_history_settings() -> None:
    request = parsed(
        "topology",
        **{env.QUEUE_TYPE: "classic", env.HISTORY: "off", env.NAMESPACE: "c"},
    )
    assert isinstance(request, ShowTopology)
    lines = render_topology(request)
    assert (
        "queue    c.router x-dead-letter-exchange=c.dead-letter x-queue-type=classic"
        in (lines)
    )
    assert not any("c.inbox" in line for line in lines)
    on = parsed("topology", "--history", "on", **{env.HISTORY: "off"})
    assert isinstance(on, ShowTopology)
    assert any(
        line.startswith("queue    switchboard.inbox ") for line in render_topology(on)
    )


def test_the_console_script_is_installed_from_pyproject() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"] == {
        "switchboard": "switchboard.__main__:main"
    }
    assert callable(entry.main)
    assert (
        "switchboard*" in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    )


def test_the_license_file_matches_pyproject() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == {"text": "MIT"}
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")


def test_a_development_token_carries_the_uid_and_its_expiry() -> None:
    token = make_token("alice", "s" * 32, now_s=1_000.0, ttl_s=60.0)
    claims = jwt.decode(
        token, "s" * 32, algorithms=["HS256"], options={"verify_exp": False}
    )
    assert claims == {"sub": "alice", "iat": 1_000, "exp": 1_060}
