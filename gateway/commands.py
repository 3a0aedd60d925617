"""Backend commands over HTTP: which answer a request gets, and what a reply becomes.

Decides only: the bearer check, the command's name and body checked against its class in
``proto.envelopes.COMMANDS`` (so that nothing malformed is published), and the HTTP status of a
command's reply. The server, the broker and the waiting live in ``http_api.py``.
"""

import hmac
from dataclasses import dataclass
from http import HTTPStatus

import msgspec

from proto import envelopes
from proto.codes import ErrorCode
from proto.commands import RefusedCommand, decode_command_body
from proto.names import api_key

BEARER_SCHEME = "bearer"
WWW_AUTHENTICATE = 'Bearer realm="switchboard"'
"""The challenge of a 401 (RFC 6750 section 3)."""

_DECODERS = {
    command: msgspec.json.Decoder(cls) for command, cls in envelopes.COMMANDS.items()
}


class _ReplyShape(msgspec.Struct, frozen=True):
    """Just enough of a reply to tell an ``ErrorReply`` from a command's own reply."""

    error: envelopes.ErrorDetail | None = None


_decode_reply_shape = msgspec.json.Decoder(_ReplyShape).decode


@dataclass(frozen=True, slots=True)
class Forward:
    """A valid command: publish ``body`` unchanged with ``routing_key``, await its reply."""

    command: str
    routing_key: str
    body: bytes


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """An HTTP response: ``body`` is JSON."""

    status: HTTPStatus
    body: bytes
    code: str = ""
    """The error code, for the log line; empty for a command's own reply."""


def refuse(status: HTTPStatus, code: str, message: str) -> HttpAnswer:
    """An ``ErrorReply`` body with this status.

    Args:
        status: the HTTP status.
        code: a stable error code (``proto.codes.ErrorCode`` or one of this module's).
        message: for people; may change.

    Returns:
        The answer, whose body is ``{"error": {"code": ..., "message": ...}}``.
    """
    detail = envelopes.ErrorDetail(code=str(code), message=message)
    return HttpAnswer(
        status, envelopes.encode(envelopes.ErrorReply(error=detail)), str(code)
    )


def is_authorized(authorization: str | None, api_key: str) -> bool:
    """Tell whether an ``Authorization`` header carries ``Bearer <api_key>`` (RFC 6750 2.1).

    The comparison takes the same time wherever the first difference is.

    Args:
        authorization: the header's value, None when absent.
        api_key: the deployment's key; an empty key authorizes nobody.
    """
    if not authorization or not api_key:
        return False
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != BEARER_SCHEME:
        return False
    return hmac.compare_digest(
        token.strip().encode("utf-8", "surrogateescape"), api_key.encode("utf-8")
    )


def unauthorized() -> HttpAnswer:
    return refuse(
        HTTPStatus.UNAUTHORIZED,
        ErrorCode.UNAUTHORIZED,
        "send Authorization: Bearer <SWITCHBOARD_API_KEY>",
    )


def too_large(max_bytes: int) -> HttpAnswer:
    return refuse(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        ErrorCode.TOO_LARGE,
        f"the body is larger than {max_bytes} bytes",
    )


def method_not_allowed(method: str) -> HttpAnswer:
    return refuse(
        HTTPStatus.METHOD_NOT_ALLOWED,
        ErrorCode.METHOD_NOT_ALLOWED,
        f"use POST, not {method}",
    )


def check_command(command: str, body: bytes) -> Forward | HttpAnswer:
    """Check a command's name and body; a valid one is forwarded with its bytes unchanged.

    Args:
        command: the ``<command>`` of ``POST /api/<command>``.
        body: the request body.

    Returns:
        ``Forward`` for a known command whose body decodes into its class; otherwise an
        ``HttpAnswer``: 404 ``unknown_command``, 400 ``invalid_json`` or 400 ``invalid_field``
        (whose message has msgspec's JSON path, such as ``$.uids[0]``): a field of the wrong
        type, a name or a body that breaks the rules of ``proto/rules.py``.
    """
    decoder = _DECODERS.get(command)
    if decoder is None:
        return refuse(
            HTTPStatus.NOT_FOUND,
            ErrorCode.UNKNOWN_COMMAND,
            f"no command {api_key(command)}",
        )
    # Validation only: the body is forwarded as it is. Its size was bounded before.
    refused = decode_command_body(decoder, body, max_bytes=None)
    if isinstance(refused, RefusedCommand):
        return refuse(HTTPStatus.BAD_REQUEST, refused.code, refused.reason)
    return Forward(command, api_key(command), body)


REPLY_ERROR_STATUSES = {
    ErrorCode.HISTORY_OFF.value: HTTPStatus.CONFLICT,
    ErrorCode.NOT_FOUND.value: HTTPStatus.NOT_FOUND,
}
"""The statuses of the ``ErrorReply`` codes that are no fault of the body (400 for the rest):
the deployment keeps no history; the mid is not in the uid's inbox."""


def answer_reply(reply: bytes) -> HttpAnswer:
    """The HTTP answer to a command's reply: its bytes unchanged, 200, or 400 for an ``ErrorReply``
    (409 for ``history_off``, 404 for ``not_found``).

    Args:
        reply: the body of the reply message.

    Returns:
        The answer; a reply that is not a JSON object (a responder's bug) becomes 502
        ``internal_error``, never a body the API does not document.
    """
    try:
        shape = _decode_reply_shape(reply)
    except msgspec.DecodeError:
        return refuse(
            HTTPStatus.BAD_GATEWAY,
            ErrorCode.INTERNAL_ERROR,
            "the command's reply is not a Switchboard reply",
        )
    if shape.error is not None:
        code = shape.error.code
        status = REPLY_ERROR_STATUSES.get(code, HTTPStatus.BAD_REQUEST)
        return HttpAnswer(status, reply, code)
    return HttpAnswer(HTTPStatus.OK, reply)


def timed_out(timeout_s: float) -> HttpAnswer:
    return refuse(
        HTTPStatus.GATEWAY_TIMEOUT,
        ErrorCode.UNAVAILABLE,
        f"no reply within {timeout_s:g} s; the command may still be carried out",
    )


def not_published() -> HttpAnswer:
    return refuse(
        HTTPStatus.SERVICE_UNAVAILABLE,
        ErrorCode.UNAVAILABLE,
        "the broker did not take the command; nothing was done, retry",
    )
