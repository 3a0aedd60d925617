"""gateway/commands.py: the bearer check, the command check, and what a reply becomes over HTTP."""

import json
from http import HTTPStatus
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import commands
from gateway.commands import Forward, HttpAnswer
from proto import envelopes
from proto.schemagen import COMMAND_EXAMPLES
from tests.unit.test_imports import PURE_FORBIDDEN, ROOT, reachable_imports

KEY = "k" * 16 + "-api-key"


def error_of(answer: HttpAnswer) -> dict[str, str]:
    detail: dict[str, str] = json.loads(answer.body)["error"]
    assert set(detail) == {"code", "message"}
    assert detail["code"] == answer.code
    return detail


def test_commands_module_is_pure() -> None:
    path = ROOT / "gateway" / "commands.py"
    offending = [
        f"{Path(source).name}:{line} imports {module}"
        for source, line, module in reachable_imports(path)
        if module.split(".")[0] in PURE_FORBIDDEN
    ]
    assert not offending


# --- authorization --------------------------------------------------------------------


@pytest.mark.parametrize(
    "header", [f"Bearer {KEY}", f"bearer {KEY}", f"BEARER  {KEY} ", f" Bearer {KEY}"]
)
def test_bearer_with_the_key_is_authorized(header: str) -> None:
    assert commands.is_authorized(header, KEY)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        KEY,
        f"Basic {KEY}",
        f"Bearer {KEY}x",
        f"Bearer {KEY[:-1]}",
        f"Bearer {KEY.upper()}",
        "Bearer \udcff\udcfe",
        "Bearer ключ-ключ-ключ-ключ",
    ],
)
def test_anything_else_is_not_authorized(header: str | None) -> None:
    assert not commands.is_authorized(header, KEY)


def test_an_empty_key_authorizes_nobody() -> None:
    assert not commands.is_authorized("Bearer ", "")
    assert not commands.is_authorized("Bearer", "")


def test_unauthorized_is_401_with_its_code() -> None:
    answer = commands.unauthorized()
    assert answer.status == HTTPStatus.UNAUTHORIZED
    assert error_of(answer)["code"] == "unauthorized"
    assert KEY not in answer.body.decode()


# --- command check --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "example"),
    [(name, example) for name, items in COMMAND_EXAMPLES.items() for example in items],
)
def test_a_valid_command_is_forwarded_byte_for_byte(
    command: str, example: object
) -> None:
    body = json.dumps(example, indent=1).encode()
    assert commands.check_command(command, body) == Forward(
        command, f"api.{command}", body
    )


def test_unknown_fields_are_forwarded() -> None:
    body = b'{"uid": "ann", "extra": [1, 2]}'
    assert isinstance(commands.check_command("connections", body), Forward)


@pytest.mark.parametrize("command", ["frobnicate", "", "api.send", "Send", "group"])
def test_an_unknown_command_is_404(command: str) -> None:
    answer = commands.check_command(command, b"{}")
    assert isinstance(answer, HttpAnswer)
    assert answer.status == HTTPStatus.NOT_FOUND
    assert error_of(answer)["code"] == "unknown_command"


@pytest.mark.parametrize("body", [b"", b"{", b"not json", b'{"uid": "a"} x', b"\xff"])
def test_a_body_that_is_not_json_is_invalid_json(body: bytes) -> None:
    answer = commands.check_command("connections", body)
    assert isinstance(answer, HttpAnswer)
    assert answer.status == HTTPStatus.BAD_REQUEST
    assert error_of(answer)["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("command", "body", "path"),
    [
        ("connections", b'{"uid": 7}', "$.uid"),
        ("connections", b"{}", "`uid`"),
        ("presence", b'{"uids": ["a", 1]}', "$.uids[1]"),
        ("presence", b'{"uids": "a"}', "$.uids"),
        ("send", b'{"to": "bob"}', "`body`"),
        ("send", b'{"body": 1}', "`to`, `group` and `room`"),
        ("send", b'{"body": 1, "to": "a", "group": "g"}', "`to`, `group` and `room`"),
        ("room.count", b"[]", "object"),
        ("group.add", b'{"group": "g", "uids": ["1"], "x": 1, "group": 2}', "$.group"),
    ],
)
def test_a_body_of_the_wrong_shape_is_invalid_field_with_its_path(
    command: str, body: bytes, path: str
) -> None:
    answer = commands.check_command(command, body)
    assert isinstance(answer, HttpAnswer)
    assert answer.status == HTTPStatus.BAD_REQUEST
    assert path in error_of(answer)["message"]
    assert answer.code == "invalid_field"


@given(st.binary(max_size=64))
def test_any_bytes_get_a_forward_or_a_400(body: bytes) -> None:
    checked = commands.check_command("presence", body)
    if isinstance(checked, HttpAnswer):
        assert checked.status == HTTPStatus.BAD_REQUEST
        assert error_of(checked)["code"] in ("invalid_json", "invalid_field")
    else:
        assert checked.body == body


# --- replies --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [b'{"mid":"018b"}', b'{"ok":true}', b'{"online":[]}', b'{"count": 3, "x": null}'],
)
def test_a_reply_is_200_byte_for_byte(reply: bytes) -> None:
    assert commands.answer_reply(reply) == HttpAnswer(HTTPStatus.OK, reply)


def test_an_error_reply_is_400_byte_for_byte() -> None:
    reply = envelopes.encode(
        envelopes.ErrorReply(
            error=envelopes.ErrorDetail(code="not_member", message="no")
        )
    )
    assert commands.answer_reply(reply) == HttpAnswer(
        HTTPStatus.BAD_REQUEST, reply, "not_member"
    )


@pytest.mark.parametrize("reply", [b"", b"[]", b"nope", b'{"error": "x"}'])
def test_a_reply_that_is_no_reply_is_502(reply: bytes) -> None:
    answer = commands.answer_reply(reply)
    assert answer.status == HTTPStatus.BAD_GATEWAY
    assert error_of(answer)["code"] == "internal_error"


def test_the_broker_answers_are_unavailable() -> None:
    timeout = commands.timed_out(2.5)
    assert timeout.status == HTTPStatus.GATEWAY_TIMEOUT
    assert error_of(timeout)["code"] == "unavailable"
    refused = commands.not_published()
    assert refused.status == HTTPStatus.SERVICE_UNAVAILABLE
    assert error_of(refused)["code"] == "unavailable"


def test_size_and_method_answers() -> None:
    large = commands.too_large(256)
    assert large.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert error_of(large)["code"] == "too_large"
    method = commands.method_not_allowed("GET")
    assert method.status == HTTPStatus.METHOD_NOT_ALLOWED
    assert error_of(method)["code"] == "method_not_allowed"
