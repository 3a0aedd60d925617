"""Decoding a backend command's body, with the same answer for each fault wherever it is served.

A backend command (``api.<command>``) is decoded by the routers (``router/inbound.py``), by the
offline stores for the group and history commands they serve (``offline_store/group_commands.py``,
``offline_store/queries.py``) and checked by the gateways' HTTP API (``gateway/commands.py``).
Each asks ``decode_command_body``, so that one body gets one answer everywhere:

- ``too_large``: longer than the service's limit (``SWITCHBOARD_MAX_COMMAND_BYTES``);
- ``invalid_field``: nested deeper than a body may be (``rules.nesting_violation``, checked
  before decoding), or a field of the wrong type, or a value that breaks ``rules.py`` (the
  reason is msgspec's message, which names the JSON path: ``$.uids[3]``);
- ``invalid_json``: not JSON at all.

Which command a routing key names, and what an unknown one is answered, is the service's own.
Pure: no I/O.
"""

from dataclasses import dataclass
from typing import TypeVar

import msgspec

from proto import envelopes, rules
from proto.codes import ErrorCode
from proto.envelopes import ErrorDetail, ErrorReply

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RefusedCommand:
    """A command that cannot be served, and why: answered with ``code`` on its ``reply_to``
    (or dead-lettered without one)."""

    code: ErrorCode
    reason: str


def decode_command_body(
    decoder: msgspec.json.Decoder[T], body: bytes, max_bytes: int | None
) -> T | RefusedCommand:
    """Decode a command's body strictly, or say why it is refused.

    Args:
        decoder: the decoder of the command's class (``envelopes.COMMANDS``,
            ``sync.HISTORY_COMMANDS``).
        body: the AMQP (or HTTP) body.
        max_bytes: the largest body decoded; None: any (the caller bounded it already).

    Returns:
        The command, or ``RefusedCommand`` with ``too_large``, ``invalid_field`` or
        ``invalid_json`` (see the module's docstring).
    """
    if max_bytes is not None and len(body) > max_bytes:
        return RefusedCommand(
            ErrorCode.TOO_LARGE, f"the body is larger than {max_bytes} bytes"
        )
    too_deep = rules.nesting_violation(body)
    if too_deep is not None:
        return RefusedCommand(ErrorCode.INVALID_FIELD, f"$.body {too_deep}")
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:  # a subclass of DecodeError: first
        return RefusedCommand(ErrorCode.INVALID_FIELD, str(exc))
    except msgspec.DecodeError:
        return RefusedCommand(ErrorCode.INVALID_JSON, "the body is not JSON")
    except RecursionError:  # deep in an unknown field, which the decoder skips
        return RefusedCommand(ErrorCode.INVALID_JSON, "the body is nested too deeply")


def error_reply(refused: RefusedCommand) -> bytes:
    """The ``ErrorReply`` body that answers a refused command on its ``reply_to``."""
    return envelopes.encode(ErrorReply(error=ErrorDetail(refused.code, refused.reason)))
