"""What the offline store makes of the group commands it serves: ``api.group.add``,
``api.group.remove`` and ``api.group.members``, decoded strictly, and their answers.

Pure: no I/O. The commands reach the store's queue ``<ns>.offline.groups`` (the routers' queue
gets them too, through ``api.#``, and leaves them here). A change is committed by
``group_store.py``; its reply comes from the router that applies the ``GroupChanged``
(``router/group_changes.py``), so that a send after the reply finds the member. A refused
command is answered here, as the router answers one (``proto/commands.py``).
"""

from dataclasses import dataclass

import msgspec

from proto import envelopes
from proto.codes import ErrorCode
from proto.commands import RefusedCommand, decode_command_body, error_reply
from proto.envelopes import ApiGroupList, ApiGroupMembers
from proto.names import API_KEY_PREFIX, GROUP_COMMANDS

COMMAND_ENVELOPE_BYTES = 1024
"""Room kept in a message for what a ``GroupChanged`` adds to a command's uids."""

_DECODERS = {
    name: msgspec.json.Decoder(envelopes.COMMANDS[name]) for name in GROUP_COMMANDS
}


@dataclass(frozen=True, slots=True)
class ChangeMembers:
    """Add ``uids`` to ``group`` (``is_added``) or remove them: one transaction, one version."""

    group: str
    uids: tuple[str, ...]
    """Each once, in the command's order."""
    is_added: bool


@dataclass(frozen=True, slots=True)
class ListMembers:
    """Answer the members of ``group``."""

    group: str


GroupCommand = ChangeMembers | ListMembers | RefusedCommand


def command_max_bytes(max_command_bytes: int, max_message_bytes: int) -> int:
    """The largest group command served: ``SWITCHBOARD_MAX_COMMAND_BYTES``, and small enough
    that its ``GroupChanged`` fits one AMQP message (``SWITCHBOARD_MAX_AMQP_MESSAGE_BYTES``)."""
    return min(max_command_bytes, max_message_bytes - COMMAND_ENVELOPE_BYTES)


def decode_group_command(routing_key: str, body: bytes, max_bytes: int) -> GroupCommand:
    """Decode one group command by its routing key.

    Args:
        routing_key: ``api.group.add``, ``api.group.remove`` or ``api.group.members``.
        body: the AMQP body.
        max_bytes: the largest body decoded (``command_max_bytes``).

    Returns:
        What to do, or why it is refused: ``unknown_command`` (another routing key), or
        what ``proto.commands.decode_command_body`` refuses.
    """
    name = routing_key.removeprefix(API_KEY_PREFIX)
    decoder = _DECODERS.get(name) if routing_key.startswith(API_KEY_PREFIX) else None
    if decoder is None:
        return RefusedCommand(ErrorCode.UNKNOWN_COMMAND, "no such group command")
    command = decode_command_body(decoder, body, max_bytes)
    if isinstance(command, RefusedCommand):
        return command
    match command:
        case ApiGroupMembers(group=group, uids=uids):
            is_added = name == "group.add"
            return ChangeMembers(group, tuple(dict.fromkeys(uids)), is_added)
        case ApiGroupList(group=group):
            return ListMembers(group)
        case _:
            raise ValueError(f"{name!r} is no group command")


def members_reply(uids: list[str], max_bytes: int) -> bytes:
    """The reply to ``api.group.members``: ``{"uids": [...]}``, or ``too_large`` when the
    group has more members than one message of ``max_bytes`` holds."""
    body = envelopes.encode(envelopes.GroupMembersReply(uids=uids))
    if len(body) <= max_bytes:
        return body
    return error_reply(
        RefusedCommand(
            ErrorCode.TOO_LARGE,
            f"the group's {len(uids)} members do not fit one reply of {max_bytes} bytes",
        )
    )
