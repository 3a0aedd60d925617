"""proto/openapi.yaml describes what the HTTP API does: every command, its classes, its errors."""

from http import HTTPStatus
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
import yaml

from gateway import commands
from proto import envelopes
from proto.codes import ErrorCode
from proto.schemagen import REPLIES, schema_components

OPENAPI = Path(__file__).resolve().parents[2] / "proto" / "openapi.yaml"
REF_TEMPLATE = "#/components/schemas/{name}"
ERROR_STATUSES = ("400", "401", "413", "502", "503", "504")


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
    return loaded


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def request_schema_of(document: dict[str, Any], command: str) -> dict[str, Any]:
    operation = document["paths"][f"/api/{command}"]["post"]
    schema: dict[str, Any] = operation["requestBody"]["content"]["application/json"][
        "schema"
    ]
    return schema


def validator(document: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    schema = {
        "$ref": REF_TEMPLATE.format(name=name),
        "components": document["components"],
    }
    return jsonschema.Draft202012Validator(schema)


def test_it_is_openapi_3_1_with_bearer_security(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    schemes = document["components"]["securitySchemes"]
    assert [{name: []} for name in schemes] == document["security"]
    (scheme,) = schemes.values()
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}


def test_every_command_has_a_path_and_every_path_a_command(
    document: dict[str, Any],
) -> None:
    assert set(document["paths"]) == {f"/api/{name}" for name in envelopes.COMMANDS}
    assert all(set(item) == {"post"} for item in document["paths"].values())


@pytest.mark.parametrize("command", list(envelopes.COMMANDS))
def test_each_path_has_its_command_and_reply_classes(
    document: dict[str, Any], command: str
) -> None:
    operation = document["paths"][f"/api/{command}"]["post"]
    request = operation["requestBody"]["content"]["application/json"]
    assert operation["requestBody"]["required"] is True
    class_ref = {"$ref": REF_TEMPLATE.format(name=envelopes.COMMANDS[command].__name__)}
    # A command may add what its class cannot say (send: exactly one target).
    assert request["schema"] == class_ref or request["schema"]["allOf"][0] == class_ref
    ok = resolve(document, operation["responses"]["200"])["content"]["application/json"]
    assert ok["schema"] == {"$ref": REF_TEMPLATE.format(name=REPLIES[command].__name__)}
    for status in ERROR_STATUSES:
        error = resolve(document, operation["responses"][status])
        assert error["content"]["application/json"]["schema"] == {
            "$ref": REF_TEMPLATE.format(name="ErrorReply")
        }


@pytest.mark.parametrize("command", list(envelopes.COMMANDS))
def test_the_examples_are_valid(document: dict[str, Any], command: str) -> None:
    operation = document["paths"][f"/api/{command}"]["post"]
    examples = operation["requestBody"]["content"]["application/json"]["examples"]
    assert examples
    request_schema = jsonschema.Draft202012Validator(
        {**request_schema_of(document, command), "components": document["components"]}
    )
    for example in examples.values():
        body = msgspec.json.encode(example["value"])
        assert isinstance(commands.check_command(command, body), commands.Forward)
        request_schema.validate(example["value"])
    reply = resolve(document, operation["responses"]["200"])
    reply_example = reply["content"]["application/json"]["example"]
    msgspec.json.decode(msgspec.json.encode(reply_example), type=REPLIES[command])
    validator(document, REPLIES[command].__name__).validate(reply_example)


def test_the_schemas_are_those_of_the_classes(document: dict[str, Any]) -> None:
    classes = [*envelopes.COMMANDS.values(), *REPLIES.values(), envelopes.ErrorReply]
    _, expected = schema_components(
        list(dict.fromkeys(classes)), ref_template=REF_TEMPLATE
    )
    assert document["components"]["schemas"] == expected


def test_the_error_answers_match_the_documented_error_object(
    document: dict[str, Any],
) -> None:
    error_reply = validator(document, "ErrorReply")
    answers: list[commands.HttpAnswer | commands.Forward] = [
        commands.unauthorized(),
        commands.too_large(65536),
        commands.method_not_allowed("PUT"),
        commands.timed_out(5.0),
        commands.not_published(),
        commands.answer_reply(b"[]"),
        commands.check_command("frobnicate", b"{}"),
    ]
    for answer in answers:
        assert isinstance(answer, commands.HttpAnswer)
        assert answer.status != HTTPStatus.OK
        error_reply.validate(msgspec.json.decode(answer.body))
    for response in document["components"]["responses"].values():
        content = response["content"]["application/json"]
        for example in [content.get("example"), *content.get("examples", {}).values()]:
            if example is not None:
                error_reply.validate(example.get("value", example))


@pytest.mark.parametrize(
    ("body", "is_valid"),
    [
        ({"to": "a", "body": 1}, True),
        ({"group": "g", "body": 1, "to": None}, True),
        ({"room": "r", "body": 1}, True),
        ({"body": 1}, False),
        ({"to": None, "body": 1}, False),
        ({"to": "a", "room": "r", "body": 1}, False),
        ({"group": "", "body": 1}, False),
        ({"group": "", "to": "", "room": "r", "body": 1}, False),
    ],
)
def test_the_send_schema_and_the_edge_agree_on_targets(
    document: dict[str, Any], body: dict[str, object], is_valid: bool
) -> None:
    schema = jsonschema.Draft202012Validator(
        {**request_schema_of(document, "send"), "components": document["components"]}
    )
    assert schema.is_valid(body) is is_valid
    checked = commands.check_command("send", msgspec.json.encode(body))
    assert isinstance(checked, commands.Forward) is is_valid


@pytest.mark.parametrize(
    ("body", "is_valid"),
    [
        ({"uid": "a", "with": "b"}, True),
        ({"uid": "a", "group": "g", "with": None, "limit": 100}, True),
        ({"uid": "a"}, False),
        ({"uid": "a", "with": "b", "group": "g"}, False),
        ({"uid": "a", "with": None, "group": None}, False),
        ({"uid": "a", "group": "g", "limit": 101}, False),
        ({"uid": "a", "group": "g", "before": 0}, False),
    ],
)
def test_the_history_schema_and_the_edge_agree_on_the_conversation(
    document: dict[str, Any], body: dict[str, object], is_valid: bool
) -> None:
    schema = jsonschema.Draft202012Validator(
        {
            **request_schema_of(document, "history"),
            "components": document["components"],
        }
    )
    assert schema.is_valid(body) is is_valid
    checked = commands.check_command("history", msgspec.json.encode(body))
    assert isinstance(checked, commands.Forward) is is_valid


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (ErrorCode.HISTORY_OFF, HTTPStatus.CONFLICT),
        (ErrorCode.NOT_FOUND, HTTPStatus.NOT_FOUND),
        (ErrorCode.INVALID_FIELD, HTTPStatus.BAD_REQUEST),
    ],
)
def test_refusals_that_are_no_fault_of_the_body_have_their_status(
    document: dict[str, Any], code: ErrorCode, status: HTTPStatus
) -> None:
    reply = envelopes.encode(
        envelopes.ErrorReply(error=envelopes.ErrorDetail(code=code, message="m"))
    )
    answer = commands.answer_reply(reply)
    assert (answer.status, answer.body) == (status, reply)
    names = {
        HTTPStatus.CONFLICT: ("history", "conversations", "message"),
        HTTPStatus.NOT_FOUND: ("message",),
    }.get(status, ())
    for name in names:
        responses = document["paths"][f"/api/{name}"]["post"]["responses"]
        documented = resolve(document, responses[str(status.value)])
        assert (
            documented["content"]["application/json"]["example"]["error"]["code"]
            == code
        )


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("history", {"uid": "a", "group": "g", "limit": 95.0, "before": 3.0}),
        ("conversations", {"uid": "a", "limit": 1.0}),
    ],
)
def test_whole_floats_are_integers_in_commands(
    document: dict[str, Any], name: str, body: dict[str, object]
) -> None:
    # JSON Schema counts 95.0 as an integer, so the document admits it: the edge does too.
    schema = jsonschema.Draft202012Validator(
        {**request_schema_of(document, name), "components": document["components"]}
    )
    assert schema.is_valid(body)
    checked = commands.check_command(name, msgspec.json.encode(body))
    assert isinstance(checked, commands.Forward)
    command = msgspec.json.decode(checked.body, type=envelopes.COMMANDS[name])
    assert type(command.limit) is int  # type: ignore[attr-defined]  # history or conversations
    for bad in ({**body, "limit": 95.5}, {**body, "limit": True}):
        assert not schema.is_valid(bad)
        assert not isinstance(
            commands.check_command(name, msgspec.json.encode(bad)), commands.Forward
        )
