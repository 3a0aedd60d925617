"""Decoding a backend command's body (``proto/commands.py``): one answer per fault, the same at
the routers, the offline stores and the gateways' HTTP API."""

import msgspec
import pytest

from offline_store.group_commands import decode_group_command
from offline_store.queries import decode_query
from proto import envelopes
from proto.codes import ErrorCode
from proto.commands import RefusedCommand, decode_command_body, error_reply
from proto.rules import MAX_BODY_DEPTH
from router.inbound import Refused, decode_command

DECODE_SEND = msgspec.json.Decoder(envelopes.ApiSend)
SEND = b'{"from": "svc", "to": "ann", "body": {"text": "hi"}}'


def nested(levels: int) -> bytes:
    """An ``api.send`` whose body nests ``levels`` arrays deep."""
    return (
        b'{"from": "svc", "to": "ann", "body": ' + b"[" * levels + b"]" * levels + b"}"
    )


def test_a_valid_body_decodes_into_its_command() -> None:
    command = decode_command_body(DECODE_SEND, SEND, max_bytes=1024)
    assert isinstance(command, envelopes.ApiSend)
    assert (command.sender, command.to) == ("svc", "ann")


def test_a_body_as_deep_as_the_rule_allows_decodes() -> None:
    command = decode_command_body(DECODE_SEND, nested(MAX_BODY_DEPTH), None)
    assert isinstance(command, envelopes.ApiSend)


@pytest.mark.parametrize(
    ("body", "max_bytes", "code", "reason_part"),
    [
        (SEND, len(SEND) - 1, ErrorCode.TOO_LARGE, f"{len(SEND) - 1} bytes"),
        (nested(MAX_BODY_DEPTH + 1), None, ErrorCode.INVALID_FIELD, "$.body"),
        # Far deeper than any decoder's stack: refused by the rule, never decoded.
        (nested(100_000), None, ErrorCode.INVALID_FIELD, "$.body"),
        (
            b'{"from": "svc", "to": 3, "body": 1}',
            None,
            ErrorCode.INVALID_FIELD,
            "$.to",
        ),
        (
            b'{"from": "a b", "to": "ann", "body": 1}',
            None,
            ErrorCode.INVALID_FIELD,
            "$.from",
        ),
        (b"{nope", None, ErrorCode.INVALID_JSON, "not JSON"),
        (b"", None, ErrorCode.INVALID_JSON, "not JSON"),
    ],
)
def test_a_bad_body_is_refused_with_its_code(
    body: bytes, max_bytes: int | None, code: ErrorCode, reason_part: str
) -> None:
    refused = decode_command_body(DECODE_SEND, body, max_bytes)
    assert isinstance(refused, RefusedCommand)
    assert refused.code == code
    assert reason_part in refused.reason


def test_the_size_is_checked_before_the_nesting() -> None:
    body = nested(MAX_BODY_DEPTH + 1)
    refused = decode_command_body(DECODE_SEND, body, len(body) - 1)
    assert isinstance(refused, RefusedCommand)
    assert refused.code == ErrorCode.TOO_LARGE


def test_the_error_reply_carries_the_code_and_the_reason() -> None:
    reply = msgspec.json.decode(
        error_reply(RefusedCommand(ErrorCode.INVALID_JSON, "the body is not JSON"))
    )
    assert reply == {
        "error": {"code": "invalid_json", "message": "the body is not JSON"}
    }


def test_router_and_store_refuse_a_too_deep_command_alike() -> None:
    # The unknown field is skipped by every decoder: only the rule refuses it.
    deep = b"[" * (MAX_BODY_DEPTH + 1) + b"]" * (MAX_BODY_DEPTH + 1)
    group = b'{"group": "g", "uids": ["a"], "x": ' + deep + b"}"
    history = b'{"mid": "m", "x": ' + deep + b"}"
    by_router = decode_command("api.group.add", group, None, mid="", ts=0)
    by_groups = decode_group_command("api.group.add", group, 10_000)
    by_queries = decode_query("api.message", history, "r", "corr", 10_000).read
    assert isinstance(by_router, Refused)
    assert isinstance(by_groups, RefusedCommand)
    assert isinstance(by_queries, RefusedCommand)
    assert (
        by_router.code == by_groups.code == by_queries.code == ErrorCode.INVALID_FIELD
    )
    assert by_router.reason == by_groups.reason == by_queries.reason
