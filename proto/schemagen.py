"""JSON Schemas of the contract, generated from the frame and envelope classes.

``python -m proto.schemagen`` writes one file per top-level thing into ``proto/schemas/``:

- ``client-frame.json`` and ``server-frame.json``: the WebSocket frames;
- ``envelope.<name>.json``: the bodies between Switchboard's own services;
- ``command.<name>.json``: the body of each backend command ``api.<name>``, with examples;
- ``reply.<name>.json`` and ``reply.error.json``: what a command's ``reply_to`` queue receives;
- ``event.<routing key>.json``: what a backend's queue bound to the events exchange receives.

Each file says in its ``description`` which exchange and routing key carry it, so that a service
in another language needs nothing but these files (``proto/README.md`` is the guide). The classes
in ``frames.py`` and ``envelopes.py`` are the source of truth; a unit test regenerates the schemas
in memory, fails on any difference with the committed files, and checks every example against
its schema and its class. This module writes files; it does no network I/O.
"""

import inspect
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from proto import envelopes, frames, groups, inbox, sync
from proto.codes import ErrorCode
from proto.names import (
    DEFAULT_NAMESPACE,
    EVENT_MESSAGE_OFFLINE,
    EVENT_MESSAGE_REFUSED,
    EVENT_USER_OFFLINE,
    EVENT_USER_ONLINE,
    KEY_ACK,
    KEY_ACK_BATCH,
    KEY_BATCH,
    KEY_CONN_CLOSED,
    KEY_CONN_OPENED,
    KEY_CONVERSATIONS,
    KEY_GATEWAY_STOPPED,
    KEY_GROUP_CHANGED,
    KEY_GROUPS_PAGE,
    KEY_GROUPS_REQUEST,
    KEY_HEARTBEAT,
    KEY_HISTORY,
    KEY_INBOX,
    KEY_PRESENCE,
    KEY_READ,
    KEY_RECEIPTS,
    KEY_REPLAY,
    KEY_REPLAY_BATCH,
    KEY_REPLAY_MORE,
    KEY_ROOM_JOINED,
    KEY_ROOM_LEFT,
    KEY_SAVED,
    KEY_SEND,
    KEY_SYNC,
    KEY_SYNC_MORE,
    Names,
    api_key,
)

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
DIALECT = "https://json-schema.org/draft/2020-12/schema"
_REF_TEMPLATE = "#/$defs/{name}"


@dataclass(frozen=True, slots=True)
class SchemaSpec:
    """One schema file: the type it describes and how it is introduced."""

    filename: str
    title: str
    description: str
    root: object
    """A frame, envelope or command class, or a union of frame classes."""
    examples: tuple[object, ...] = ()
    """Valid JSON values of ``root``, written as the schema's ``examples`` (and tested)."""


def _summary(cls: type) -> str:
    """The class's own docstring as plain text (RST ````x```` becomes Markdown ```x```)."""
    return inspect.cleandoc(cls.__dict__.get("__doc__") or "").replace("``", "`")


def _in_any_namespace(name: str) -> str:
    """``switchboard.inbound`` -> ``<namespace>.inbound``: the name as every namespace has it."""
    return "<namespace>" + name.removeprefix(DEFAULT_NAMESPACE)


_DEFAULT = Names()
INBOUND = _in_any_namespace(_DEFAULT.inbound_exchange)
EVENTS = _in_any_namespace(_DEFAULT.events_exchange)
DEAD_LETTER = _in_any_namespace(_DEFAULT.dead_letter_queue)
_NAMESPACE_NOTE = (
    "(<namespace> is the deployment's SWITCHBOARD_NAMESPACE, `switchboard` by default)"
)

# The reply each command's reply_to queue receives when the command is carried out. A refused
# command (a body that does not match its schema, an unknown command) gets ErrorReply instead.
REPLIES: Mapping[str, type[envelopes.Envelope]] = {
    "send": envelopes.SendReply,
    "broadcast": envelopes.SendReply,
    "kick": envelopes.KickReply,
    "group.add": envelopes.OkReply,
    "group.remove": envelopes.OkReply,
    "group.members": envelopes.GroupMembersReply,
    "presence": envelopes.PresenceReply,
    "connections": envelopes.ConnectionsReply,
    "room.count": envelopes.RoomCountReply,
    "history": sync.HistoryReply,
    "conversations": sync.ConversationsReply,
    "message": sync.MessageReply,
}
REPLY_SUMMARIES: Mapping[type[envelopes.Envelope], str] = {
    envelopes.SendReply: (
        "The message was accepted; `mid` is its server message id (`mids`: each uid's, for"
        " an `api.send` to a list of uids)."
    ),
    envelopes.KickReply: "`kicked` connections of the uid are being closed.",
    envelopes.OkReply: "The change is done.",
    envelopes.GroupMembersReply: "The group's members, sorted; none for an unknown group.",
    envelopes.PresenceReply: "The uids of the command that have at least one connection now.",
    envelopes.ConnectionsReply: "Every connection of the uid, with the gateway that holds it.",
    envelopes.RoomCountReply: "How many connections are in the room now.",
    sync.HistoryReply: (
        "The page, oldest first, each message frame with the uid's `seq`; `more` when"
        " older entries remain."
    ),
    sync.ConversationsReply: (
        "The uid's conversations, the most recently active first: `with` or `group`, the"
        " last message, the unread count and the read marker (`null` when none)."
    ),
    sync.MessageReply: (
        "The message frame (with the uid's `seq` when the command named a uid)."
    ),
}
COMMAND_ERROR_CODES = (
    ErrorCode.INVALID_JSON,
    ErrorCode.INVALID_FIELD,
    ErrorCode.UNKNOWN_COMMAND,
    ErrorCode.INTERNAL_ERROR,
)
"""The codes a refused command typically gets, named in reply.error.json."""
_MID = "018bcfe5680000000123456789"
_TS = 1_700_000_000_000
_MESSAGE = {
    "type": "message",
    "seq": 41,
    "mid": _MID,
    "from": "alice",
    "to": "bob",
    "body": {"text": "hi"},
    "ts": _TS,
}

COMMAND_EXAMPLES: Mapping[str, tuple[object, ...]] = {
    "send": (
        {"to": "bob", "body": {"text": "hi"}},
        {"to": ["bob", "carol"], "body": {"text": "hi"}, "id": "digest-7"},
        {"group": "team", "body": "hello", "from": "billing", "id": "invoice-42"},
        {"room": "lobby", "body": {"text": "maintenance at 18:00"}, "from": "ops"},
    ),
    "broadcast": (
        {"body": {"text": "we are back"}},
        {"body": "deploy finished", "from": "ops"},
    ),
    "kick": ({"uid": "mallory", "reason": "banned"}, {"uid": "bob"}),
    "group.add": ({"group": "team", "uids": ["alice", "bob"]},),
    "group.remove": ({"group": "team", "uids": ["bob"]},),
    "group.members": ({"group": "team"},),
    "presence": ({"uids": ["alice", "bob", "carol"]},),
    "connections": ({"uid": "alice"},),
    "room.count": ({"room": "lobby"},),
    "history": (
        {"uid": "bob", "with": "alice"},
        {"uid": "bob", "group": "team", "before": 120, "limit": 20},
    ),
    "conversations": ({"uid": "bob"}, {"uid": "bob", "before": 300, "limit": 10}),
    "message": ({"mid": _MID}, {"mid": _MID, "uid": "bob"}),
}
REPLY_EXAMPLES: Mapping[type[envelopes.Envelope], tuple[object, ...]] = {
    envelopes.SendReply: (
        {"mid": _MID},
        {"mids": {"bob": _MID, "carol": "018bcfe5680000010123456789"}},
    ),
    envelopes.KickReply: ({"kicked": 2}, {"kicked": 0}),
    envelopes.OkReply: ({"ok": True},),
    envelopes.GroupMembersReply: ({"uids": ["alice", "bob"]}, {"uids": []}),
    envelopes.PresenceReply: ({"online": ["alice", "carol"]}, {"online": []}),
    envelopes.ConnectionsReply: (
        {
            "connections": [
                {"conn_id": "k1", "gateway_id": "gw-a"},
                {"conn_id": "k7", "gateway_id": "gw-b"},
            ]
        },
    ),
    envelopes.RoomCountReply: ({"count": 42},),
    sync.HistoryReply: ({"messages": [_MESSAGE], "more": True},),
    sync.ConversationsReply: (
        {
            "items": [
                {"with": "alice", "last": _MESSAGE, "unread": 1, "read": None},
                {
                    "group": "team",
                    "last": {
                        **{k: v for k, v in _MESSAGE.items() if k != "to"},
                        "seq": 40,
                        "group": "team",
                    },
                    "unread": 0,
                    "read": _MID,
                },
            ]
        },
    ),
    sync.MessageReply: ({"message": _MESSAGE},),
    envelopes.ErrorReply: (
        {
            "error": {
                "code": str(ErrorCode.INVALID_FIELD),
                "message": "Expected `str`, got `int` - at `$.to`",
            }
        },
        {
            "error": {
                "code": str(ErrorCode.UNKNOWN_COMMAND),
                "message": "no command api.frobnicate",
            }
        },
    ),
}
EVENT_CLASSES: Mapping[str, type[envelopes.Envelope]] = {
    EVENT_USER_ONLINE: envelopes.UserOnline,
    EVENT_USER_OFFLINE: envelopes.UserOffline,
    EVENT_MESSAGE_OFFLINE: envelopes.MessageOffline,
    EVENT_MESSAGE_REFUSED: envelopes.MessageRefused,
}
EVENT_EXAMPLES: Mapping[str, tuple[object, ...]] = {
    EVENT_USER_ONLINE: ({"uid": "alice", "ts": _TS},),
    EVENT_USER_OFFLINE: ({"uid": "alice", "ts": _TS + 60_000},),
    EVENT_MESSAGE_OFFLINE: (
        {"uid": "bob", "mid": _MID, "ts": _TS},
        {"uid": "bob", "mid": _MID, "ts": _TS, "sender": "alice", "with": "alice"},
        {"uid": "bob", "mid": _MID, "ts": _TS, "sender": "alice", "group": "team"},
    ),
    EVENT_MESSAGE_REFUSED: (
        {
            "uid": "bob",
            "mid": _MID,
            "code": "recipient_full",
            "ts": _TS,
            "sender": "alice",
            "client_id": "c1",
        },
    ),
}


def _envelope(
    filename: str, root: type[envelopes.Envelope], carried_by: str
) -> SchemaSpec:
    return SchemaSpec(
        filename=f"envelope.{filename}.json",
        title=f"Switchboard envelope {root.__name__}",
        description=f"{_summary(root)} Carried by {carried_by}.",
        root=root,
    )


def _command(name: str) -> SchemaSpec:
    key = api_key(name)
    return SchemaSpec(
        filename=f"command.{name}.json",
        title=f"Switchboard command {key}",
        description=(
            f"{_summary(envelopes.COMMANDS[name])}\n\n"
            f"Publish this JSON body (content_type application/json) to the topic exchange"
            f" {INBOUND} with routing key {key} {_NAMESPACE_NOTE}; set reply_to and"
            f" correlation_id to receive reply.{name}.json, or reply.error.json if the"
            f" command is refused, on your reply_to queue. Without reply_to there is no"
            f" reply, and a refused command goes to the dead-letter queue {DEAD_LETTER}."
            f" Unknown fields are ignored."
        ),
        root=envelopes.COMMANDS[name],
        examples=COMMAND_EXAMPLES[name],
    )


def _reply(name: str) -> SchemaSpec:
    root = REPLIES[name]
    key = api_key(name)
    return SchemaSpec(
        filename=f"reply.{name}.json",
        title=f"Switchboard reply to {key}",
        description=(
            f"{REPLY_SUMMARIES[root]}\n\n"
            f"The reply to a {key} command (command.{name}.json) that was carried out:"
            f" published through the default exchange to the command's reply_to queue,"
            f" with the command's correlation_id."
        ),
        root=root,
        examples=REPLY_EXAMPLES[root],
    )


def _error_reply() -> SchemaSpec:
    codes = ", ".join(f"`{code}`" for code in COMMAND_ERROR_CODES)
    return SchemaSpec(
        filename="reply.error.json",
        title="Switchboard error reply",
        description=(
            f"{_summary(envelopes.ErrorReply)}\n\n"
            f"The reply to any api.<command> that was refused, instead of its"
            f" reply.<command>.json: published through the default exchange to the"
            f" command's reply_to queue, with the command's correlation_id. `code` is a"
            f" stable code of proto/codes.py (such as {codes}); `message` is for people and"
            f" may change."
        ),
        root=envelopes.ErrorReply,
        examples=REPLY_EXAMPLES[envelopes.ErrorReply],
    )


def _event(routing_key: str) -> SchemaSpec:
    root = EVENT_CLASSES[routing_key]
    pattern = routing_key.split(".", 1)[0] + ".*"
    return SchemaSpec(
        filename=f"event.{routing_key}.json",
        title=f"Switchboard event {routing_key}",
        description=(
            f"{_summary(root)}\n\n"
            f"Published on the topic exchange {EVENTS} with routing key {routing_key}"
            f" {_NAMESPACE_NOTE}. Bind your own durable queue to that exchange with"
            f" {routing_key} (or {pattern}, or #) to receive it; nothing is kept for a"
            f" service that has no queue bound. `ts` is Unix time in milliseconds."
        ),
        root=root,
        examples=EVENT_EXAMPLES[routing_key],
    )


_INBOUND = f"the inbound exchange {INBOUND}, routing key"
SPECS = (
    SchemaSpec(
        filename="client-frame.json",
        title="Switchboard client frame",
        description=(
            "A JSON text frame a client sends to a gateway at ws://HOST:PORT/ws;"
            " `type` selects the frame. Unknown fields are ignored."
        ),
        root=frames.AnyClientFrame,
    ),
    SchemaSpec(
        filename="server-frame.json",
        title="Switchboard server frame",
        description=(
            "A JSON text frame a gateway sends to a client; `type` selects the frame."
            " Clients should ignore unknown fields."
        ),
        root=frames.AnyServerFrame,
    ),
    _envelope("conn-opened", envelopes.ConnOpened, f"{_INBOUND} {KEY_CONN_OPENED}"),
    _envelope("conn-closed", envelopes.ConnClosed, f"{_INBOUND} {KEY_CONN_CLOSED}"),
    _envelope("outgoing", envelopes.Outgoing, f"{_INBOUND} {KEY_SEND}"),
    _envelope("room-joined", envelopes.RoomJoined, f"{_INBOUND} {KEY_ROOM_JOINED}"),
    _envelope("room-left", envelopes.RoomLeft, f"{_INBOUND} {KEY_ROOM_LEFT}"),
    _envelope("presence-asked", envelopes.PresenceAsked, f"{_INBOUND} {KEY_PRESENCE}"),
    _envelope("acked", envelopes.Acked, f"{_INBOUND} {KEY_ACK}"),
    _envelope("heartbeat", envelopes.Heartbeat, f"{_INBOUND} {KEY_HEARTBEAT}"),
    _envelope(
        "gateway-stopped",
        envelopes.GatewayStopped,
        f"{_INBOUND} {KEY_GATEWAY_STOPPED}",
    ),
    _envelope(
        "batch",
        envelopes.Batch,
        f"{_INBOUND} {KEY_BATCH} (to the routers), {KEY_ACK_BATCH}"
        f" ({KEY_ACK} items, to the offline stores) and {KEY_REPLAY_BATCH}"
        f" ({KEY_REPLAY} items, from a router to the offline stores)",
    ),
    _envelope("saved", envelopes.Saved, f"{_INBOUND} {KEY_SAVED}"),
    _envelope(
        "replay-request",
        envelopes.ReplayRequest,
        f"{_INBOUND} {KEY_REPLAY} (from a router) or {KEY_REPLAY_MORE}"
        " (a gateway asking for the next window)",
    ),
    _envelope(
        "delivery",
        envelopes.Delivery,
        f"the deliveries exchange {_in_any_namespace(_DEFAULT.deliveries_exchange)}"
        " (routing key = gateway_id) and the undeliverable exchange"
        f" {_in_any_namespace(_DEFAULT.undeliverable_exchange)}",
    ),
    _envelope(
        "sync-request",
        sync.SyncRequest,
        f"{_INBOUND} {KEY_SYNC} (from a router) or {KEY_SYNC_MORE}"
        " (a gateway asking for the next window)",
    ),
    _envelope("history-asked", sync.HistoryAsked, f"{_INBOUND} {KEY_HISTORY}"),
    _envelope(
        "conversations-asked",
        sync.ConversationsAsked,
        f"{_INBOUND} {KEY_CONVERSATIONS}",
    ),
    _envelope("read-asked", sync.ReadAsked, f"{_INBOUND} {KEY_READ}"),
    _envelope("receipts", sync.Receipts, f"{_INBOUND} {KEY_RECEIPTS}"),
    _envelope(
        "group-changed",
        groups.GroupChanged,
        f"{_INBOUND} {KEY_GROUP_CHANGED} (to the routers)",
    ),
    _envelope(
        "groups-request",
        groups.GroupsRequest,
        f"{_INBOUND} {KEY_GROUPS_REQUEST} (to the offline stores)",
    ),
    _envelope(
        "groups-page",
        groups.GroupsPage,
        f"{_INBOUND} {KEY_GROUPS_PAGE} (to the routers)",
    ),
    _envelope(
        "inbox",
        inbox.InboxBatch,
        f"{_INBOUND} {KEY_INBOX} (from a router, with SWITCHBOARD_HISTORY on)",
    ),
    *(_command(name) for name in envelopes.COMMANDS),
    *(_reply(name) for name in envelopes.COMMANDS),
    _error_reply(),
    *(_event(routing_key) for routing_key in EVENT_CLASSES),
)


def schema_components(
    types: Sequence[object], ref_template: str
) -> tuple[tuple[dict[str, object], ...], dict[str, object]]:
    """``msgspec.json.schema_components`` with every ``description`` normalised.

    msgspec copies a class's docstring into ``description``, and how it strips the indentation
    of the lines after the first has changed between releases. Each description goes through
    ``inspect.cleandoc`` here, so that the committed schemas and ``openapi.yaml`` read the same
    whatever msgspec version rendered them.

    Args:
        types: the classes (or unions) to describe.
        ref_template: how a reference to a definition is written, with ``{name}``.

    Returns:
        The schema of each type, and the definitions they refer to, by name.
    """
    roots, definitions = msgspec.json.schema_components(
        types, ref_template=ref_template
    )
    # A msgspec.Raw field annotated with frames.shapes holds structs of its own: add their
    # definitions (and those they name in turn), and refer to them.
    described: set[str] = set()
    while wanted := _shape_names([*roots, *definitions.values()]) - described:
        described |= wanted
        structs = [getattr(frames, name) for name in sorted(wanted)]
        _, more = msgspec.json.schema_components(structs, ref_template=ref_template)
        definitions = {**more, **definitions}
    return (
        tuple(_cleaned(_referred(root, ref_template)) for root in roots),
        {
            name: _cleaned(_referred(definition, ref_template))
            for name, definition in definitions.items()
        },
    )


def _shape_names(schemas: Sequence[object]) -> set[str]:
    """The names under ``frames.SHAPES_KEY`` anywhere in these schemas."""
    shape_names: set[str] = set()
    pending = list(schemas)
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            shape_names.update(value.get(frames.SHAPES_KEY, ()))
            pending += value.values()
        elif isinstance(value, list):
            pending += value
    return shape_names


def _referred(schema: dict[str, object], ref_template: str) -> dict[str, object]:
    """A copy of ``schema`` where each ``frames.SHAPES_KEY`` became references: a ``$ref`` to
    the one struct, or a ``oneOf`` of them."""

    def refer(value: object) -> object:
        if isinstance(value, list):
            return [refer(item) for item in value]
        if not isinstance(value, dict):
            return value
        result = {k: refer(v) for k, v in value.items() if k != frames.SHAPES_KEY}
        shape_names = value.get(frames.SHAPES_KEY)
        if isinstance(shape_names, list):
            refs = [{"$ref": ref_template.format(name=name)} for name in shape_names]
            result.update(refs[0] if len(refs) == 1 else {"oneOf": refs})
        return result

    referred = refer(schema)
    assert isinstance(referred, dict)
    return referred


def _cleaned(schema: dict[str, object]) -> dict[str, object]:
    """A copy of ``schema`` whose ``description`` strings, at any depth, are ``cleandoc``-ed."""

    def clean(value: object, key: str = "") -> object:
        if isinstance(value, dict):
            return {k: clean(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(item) for item in value]
        if key == "description" and isinstance(value, str):
            return inspect.cleandoc(value)
        return value

    cleaned = clean(schema)
    assert isinstance(cleaned, dict)
    return cleaned


def build_schema(spec: SchemaSpec) -> dict[str, object]:
    """Return the JSON Schema of one spec, with its dialect, title and description.

    Args:
        spec: the file to build.

    Returns:
        A JSON Schema (draft 2020-12) whose definitions are under ``$defs``, with the spec's
        ``examples`` when it has some.
    """
    (root,), definitions = schema_components([spec.root], ref_template=_REF_TEMPLATE)
    examples = {"examples": list(spec.examples)} if spec.examples else {}
    return {
        "$schema": DIALECT,
        "title": spec.title,
        "description": spec.description,
        **examples,
        **root,
        "$defs": definitions,
    }


def render_schemas() -> dict[str, str]:
    """Return the text of every schema file, by file name.

    Returns:
        ``{filename: text}``: pretty-printed JSON, sorted keys, a trailing newline.
    """
    return {
        spec.filename: json.dumps(build_schema(spec), indent=2, sort_keys=True) + "\n"
        for spec in SPECS
    }


def write_schemas(directory: Path = SCHEMA_DIR) -> list[str]:
    """Write every schema file into ``directory`` and remove stale ``*.json`` files.

    Args:
        directory: where the files go; created if missing.

    Returns:
        The names of the files that were written, changed or removed.
    """
    directory.mkdir(parents=True, exist_ok=True)
    rendered = render_schemas()
    changed = []
    for stale in sorted(directory.glob("*.json")):
        if stale.name not in rendered:
            stale.unlink()
            changed.append(stale.name)
    for filename, text in rendered.items():
        path = directory / filename
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(filename)
    return changed


def main(argv: Sequence[str] = ()) -> int:
    """Write the schemas into ``proto/schemas/`` (or the directory given)."""
    directory = Path(argv[0]) if argv else SCHEMA_DIR
    changed = write_schemas(directory)
    for filename in changed:
        print(f"updated {directory / filename}")
    if not changed:
        print(f"{directory} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
