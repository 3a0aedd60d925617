"""The committed JSON Schemas in proto/schemas/ match the classes, and their examples are valid."""

import json
import re
from pathlib import Path

import jsonschema
import msgspec
import pytest

import proto.names
from proto import envelopes, frames, schemagen, sync
from proto.names import (
    KEY_CONN_OPENED,
    KEY_PRESENCE,
    KEY_ROOM_JOINED,
    KEY_ROOM_LEFT,
    api_key,
)

COMMITTED = {path.name: path for path in schemagen.SCHEMA_DIR.glob("*.json")}
RENDERED = schemagen.render_schemas()
SPECS = {spec.filename: spec for spec in schemagen.SPECS}
HINT = "run `make schemas` and commit proto/schemas/"
GUIDE = Path(schemagen.__file__).with_name("README.md")
EXAMPLES = [
    pytest.param(spec, example, id=f"{spec.filename}[{n}]")
    for spec in schemagen.SPECS
    for n, example in enumerate(spec.examples)
]


def validator(filename: str) -> jsonschema.Draft202012Validator:
    schema = json.loads(RENDERED[filename])
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_no_schema_file_is_missing() -> None:
    missing = sorted(RENDERED.keys() - COMMITTED.keys())
    assert not missing, f"missing schema files {missing}: {HINT}"


def test_no_schema_file_is_extra() -> None:
    extra = sorted(COMMITTED.keys() - RENDERED.keys())
    assert not extra, f"schema files no class describes {extra}: {HINT}"


def test_file_names_are_unique() -> None:
    assert len(SPECS) == len(schemagen.SPECS)


@pytest.mark.parametrize("filename", sorted(RENDERED))
def test_committed_schema_matches_classes(filename: str) -> None:
    path = COMMITTED.get(filename)
    if path is None:
        pytest.fail(f"{filename} is missing: {HINT}")
    assert path.read_text(encoding="utf-8") == RENDERED[filename], (
        f"{filename} is stale: {HINT}"
    )


@pytest.mark.parametrize("filename", sorted(RENDERED))
def test_schema_file_is_self_describing(filename: str) -> None:
    schema = json.loads(RENDERED[filename])
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"]
    assert schema["description"]
    assert RENDERED[filename].endswith("}\n")


@pytest.mark.parametrize("filename", sorted(RENDERED))
def test_schema_is_a_valid_draft_2020_12_schema(filename: str) -> None:
    validator(filename)


# --- coverage: every class and name of the contract has its file -------------------------


def test_every_envelope_decoder_has_a_schema() -> None:
    decoded = {
        value.__self__.type
        for module in (envelopes, sync)
        for name, value in vars(module).items()
        if name.startswith("decode_")
    }
    described = {spec.root for spec in schemagen.SPECS}
    assert decoded <= described, f"envelopes without a schema: {decoded - described}"


def test_every_envelope_and_command_class_is_documented() -> None:
    defined = {
        value
        for module in (envelopes, sync)
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, (envelopes.Envelope, envelopes.Command))
        and value not in (envelopes.Envelope, envelopes.Command)
    }
    documented = {
        name for text in RENDERED.values() for name in json.loads(text)["$defs"]
    }
    missing = {cls.__name__ for cls in defined} - documented
    assert not missing, f"classes in no schema: {sorted(missing)}"


def test_every_command_has_a_command_and_a_reply_file() -> None:
    for name, command in envelopes.COMMANDS.items():
        assert SPECS[f"command.{name}.json"].root is command
        assert SPECS[f"reply.{name}.json"].root is schemagen.REPLIES[name]
    assert schemagen.REPLIES.keys() == envelopes.COMMANDS.keys()
    assert SPECS["reply.error.json"].root is envelopes.ErrorReply
    commands = {f for f in RENDERED if f.startswith("command.")}
    replies = {f for f in RENDERED if f.startswith("reply.")}
    assert commands == {f"command.{name}.json" for name in envelopes.COMMANDS}
    assert replies == {f"reply.{name}.json" for name in envelopes.COMMANDS} | {
        "reply.error.json"
    }


def test_every_event_routing_key_has_an_event_file() -> None:
    declared = {
        value for key, value in vars(proto.names).items() if key.startswith("EVENT_")
    }
    assert schemagen.EVENT_CLASSES.keys() == declared
    assert {f for f in RENDERED if f.startswith("event.")} == {
        f"event.{key}.json" for key in declared
    }


def test_every_frame_class_is_in_a_frame_schema() -> None:
    client = json.loads(RENDERED["client-frame.json"])["$defs"]
    server = json.loads(RENDERED["server-frame.json"])["$defs"]
    assert set(client) == {t.__name__ for t in frames.AnyClientFrame.__args__}
    items = {frames.PeerConversation.__name__, frames.GroupConversation.__name__}
    assert set(server) == {t.__name__ for t in frames.AnyServerFrame.__args__} | items


# --- descriptions name the exchange and the routing key ---------------------------------


@pytest.mark.parametrize("name", sorted(envelopes.COMMANDS))
def test_command_description_says_how_to_publish_it(name: str) -> None:
    description = json.loads(RENDERED[f"command.{name}.json"])["description"]
    assert "topic exchange <namespace>.inbound" in description
    assert f"routing key {api_key(name)}" in description
    assert "reply_to and correlation_id" in description
    assert f"reply.{name}.json" in description
    assert "reply.error.json" in description


@pytest.mark.parametrize("name", sorted(envelopes.COMMANDS))
def test_reply_description_names_its_command(name: str) -> None:
    description = json.loads(RENDERED[f"reply.{name}.json"])["description"]
    assert api_key(name) in description
    assert "reply_to" in description
    assert "correlation_id" in description


@pytest.mark.parametrize("routing_key", sorted(schemagen.EVENT_CLASSES))
def test_event_description_says_where_to_bind(routing_key: str) -> None:
    description = json.loads(RENDERED[f"event.{routing_key}.json"])["description"]
    assert "topic exchange <namespace>.events" in description
    assert f"routing key {routing_key}" in description


@pytest.mark.parametrize(
    ("filename", "routing_key"),
    [
        ("envelope.conn-opened.json", KEY_CONN_OPENED),
        ("envelope.room-joined.json", KEY_ROOM_JOINED),
        ("envelope.room-left.json", KEY_ROOM_LEFT),
        ("envelope.presence-asked.json", KEY_PRESENCE),
    ],
)
def test_envelope_description_names_its_routing_key(
    filename: str, routing_key: str
) -> None:
    description = json.loads(RENDERED[filename])["description"]
    assert f"<namespace>.inbound, routing key {routing_key}." in description


def test_descriptions_are_plain_text_not_rst() -> None:
    for filename, text in RENDERED.items():
        assert "``" not in json.loads(text)["description"], filename


# --- examples: valid against the schema, and decoded by the class ------------------------


@pytest.mark.parametrize("filename", sorted(RENDERED))
def test_commands_replies_and_events_have_examples(filename: str) -> None:
    if filename.startswith(("command.", "reply.", "event.")):
        assert SPECS[filename].examples
        assert json.loads(RENDERED[filename])["examples"]
    else:
        assert "examples" not in json.loads(RENDERED[filename])


@pytest.mark.parametrize(("spec", "example"), EXAMPLES)
def test_example_validates_against_its_schema(
    spec: schemagen.SchemaSpec, example: object
) -> None:
    validator(spec.filename).validate(example)


@pytest.mark.parametrize(("spec", "example"), EXAMPLES)
def test_example_decodes_with_its_class(
    spec: schemagen.SchemaSpec, example: object
) -> None:
    encoded = json.dumps(example).encode()
    decoded = msgspec.json.decode(encoded, type=spec.root)
    assert isinstance(decoded, spec.root)  # type: ignore[arg-type]  # root is a class here
    # Nothing the example says is lost: encoding again gives back every field it had.
    again = msgspec.json.decode(msgspec.json.encode(decoded))
    assert isinstance(example, dict)
    assert {k: again[k] for k in example} == example


def test_brief_examples_are_among_the_send_examples() -> None:
    examples = SPECS["command.send.json"].examples
    assert {"to": "bob", "body": {"text": "hi"}} in examples
    assert {
        "group": "team",
        "body": "hello",
        "from": "billing",
        "id": "invoice-42",
    } in examples


@pytest.mark.parametrize(
    ("filename", "instance"),
    [
        ("command.send.json", {"to": "bob"}),
        ("command.send.json", {"to": 1, "body": "x"}),
        ("command.kick.json", {"reason": "x"}),
        ("command.group.add.json", {"group": "team", "uids": "bob"}),
        ("command.group.add.json", {"group": "team", "uids": ["bob", 2]}),
        ("reply.room.count.json", {"count": "1"}),
        ("reply.error.json", {"error": "unknown_command"}),
        ("event.user.online.json", {"uid": "alice", "ts": "1700000000000"}),
    ],
)
def test_schema_and_class_reject_the_same_bad_bodies(
    filename: str, instance: object
) -> None:
    assert not validator(filename).is_valid(instance)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(json.dumps(instance), type=SPECS[filename].root)


@pytest.mark.parametrize(
    "text",
    [
        '{"type":"send","id":"c1","to":"bob","body":1}',
        '{"type":"send","id":"c1","group":"team","body":{"a":[1]}}',
        '{"type":"send","id":"c1","broadcast":true,"body":null}',
        '{"type":"join","id":"c2","room":"lobby"}',
        '{"type":"presence","id":"c3","uids":["alice"]}',
        '{"type":"ack","mids":["m1"],"extra":1}',
        '{"type":"init","token":"t","since":0}',
        '{"type":"history","id":"h1","with":"bob","before":1,"limit":100}',
        '{"type":"history","id":"h1","group":"team"}',
        '{"type":"read","id":"r1","mid":"018bcfe5680000000123456789"}',
        '{"type":"conversations","id":"v1","limit":1}',
    ],
)
def test_client_frame_schema_accepts_what_the_decoder_accepts(text: str) -> None:
    assert validator("client-frame.json").is_valid(json.loads(text))
    frames.decode_client_frame(text)


@pytest.mark.parametrize(
    "text",
    [
        '{"type":"send","id":"c1","to":"","body":1}',
        '{"type":"send","id":"c1","broadcast":"true","body":1}',
        '{"type":"join","id":"c2"}',
        '{"type":"ping","id":5}',
        '{"type":"nope"}',
        '{"type":"init","token":"t","since":-1}',
        '{"type":"init","token":"t","since":true}',
        '{"type":"history","id":"h1","with":"bob","limit":0}',
        '{"type":"history","id":"h1","with":"bob","limit":101}',
        '{"type":"history","id":"h1","with":"bob","before":0}',
        '{"type":"history","id":"h1","with":"a:b"}',
        '{"type":"read","id":"r1","mid":"a b"}',
        '{"type":"read","id":"r1"}',
        '{"type":"conversations","id":"v1","before":1.5}',
    ],
)
def test_client_frame_schema_rejects_what_the_decoder_rejects(text: str) -> None:
    assert not validator("client-frame.json").is_valid(json.loads(text))
    with pytest.raises(msgspec.ValidationError):
        frames.decode_client_frame(text)


_LAST = {"type": "message", "seq": 3, "mid": "m", "from": "a", "body": 1, "ts": 1}


@pytest.mark.parametrize(
    ("item", "is_valid"),
    [
        ({"with": "bob", "last": _LAST, "unread": 0, "read": None}, True),
        ({"group": "team", "last": _LAST, "unread": 2, "read": "m"}, True),
        ({"with": "bob", "last": _LAST, "unread": 0}, False),
        ({"last": _LAST, "unread": 0, "read": None}, False),
    ],
)
def test_server_schema_and_decoder_agree_on_conversation_items(
    item: dict[str, object], is_valid: bool
) -> None:
    frame = {"type": "conversations", "id": "v1", "items": [item]}
    assert validator("server-frame.json").is_valid(frame) is is_valid
    raw = json.dumps(item).encode()
    if is_valid:
        frames.decode_conversation_item(raw)
    else:
        with pytest.raises(msgspec.ValidationError):
            frames.decode_conversation_item(raw)


@pytest.mark.parametrize(
    "item",
    [
        {"with": "bob", "group": "t", "last": _LAST, "unread": 0, "read": None},
        {"group": "team", "last": {"type": "ready"}, "unread": 0, "read": None},
        {"group": "team", "last": _LAST, "unread": "1", "read": None},
    ],
)
def test_server_schema_refuses_items_of_neither_shape(item: dict[str, object]) -> None:
    frame = {"type": "conversations", "id": "v1", "items": [item]}
    assert not validator("server-frame.json").is_valid(frame)


def test_history_answers_refer_to_message_frames() -> None:
    history = json.loads(RENDERED["server-frame.json"])["$defs"]["HistoryPage"]
    assert history["properties"]["messages"]["items"] == {"$ref": "#/$defs/Message"}
    assert history["required"] == ["type", "id", "messages", "more"]
    reply = json.loads(RENDERED["reply.message.json"])
    assert reply["$defs"]["MessageReply"]["properties"]["message"] == {
        "$ref": "#/$defs/Message"
    }
    assert frames.SHAPES_KEY not in "".join(RENDERED.values())


def test_send_schema_requires_only_id_and_body() -> None:
    # Exactly one of to/group/room/broadcast is the gateway session's rule, not the decoder's.
    send = json.loads(RENDERED["client-frame.json"])["$defs"]["Send"]
    assert send["required"] == ["type", "id", "body"]
    assert {"to", "group", "room", "broadcast"} <= send["properties"].keys()


def test_message_schema_uses_wire_name_from() -> None:
    message = json.loads(RENDERED["server-frame.json"])["$defs"]["Message"]
    assert "from" in message["properties"]
    assert "sender" not in message["properties"]


@pytest.mark.parametrize("name", ["send", "broadcast"])
def test_command_schemas_use_wire_name_from_with_its_default(name: str) -> None:
    command = json.loads(RENDERED[f"command.{name}.json"])
    properties = command["$defs"][envelopes.COMMANDS[name].__name__]["properties"]
    assert properties["from"]["default"] == "system"
    assert "sender" not in properties


# --- the generator and the guide ---------------------------------------------------------


def test_write_schemas_replaces_stale_and_removes_extra_files(tmp_path) -> None:
    (tmp_path / "client-frame.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "envelope.retired.json").write_text("{}\n", encoding="utf-8")
    changed = schemagen.write_schemas(tmp_path)
    assert "client-frame.json" in changed
    assert "envelope.retired.json" in changed
    written = {p.name: p.read_text(encoding="utf-8") for p in tmp_path.glob("*.json")}
    assert written == RENDERED
    assert schemagen.write_schemas(tmp_path) == []


def test_guide_lists_every_schema_file() -> None:
    listed = set(re.findall(r"`([a-z.-]+\.json)`", GUIDE.read_text(encoding="utf-8")))
    assert listed >= RENDERED.keys(), sorted(RENDERED.keys() - listed)
    assert listed <= RENDERED.keys(), sorted(listed - RENDERED.keys())


class _Indented(msgspec.Struct):
    """First line.

    Second paragraph, indented in the source as every docstring is.
    """


def test_descriptions_do_not_depend_on_how_msgspec_strips_docstrings() -> None:
    _, definitions = schemagen.schema_components(
        [_Indented], ref_template="#/$defs/{name}"
    )
    assert definitions["_Indented"] == {
        "title": "_Indented",
        "description": (
            "First line.\n\n"
            "Second paragraph, indented in the source as every docstring is."
        ),
        "type": "object",
        "properties": {},
        "required": [],
    }
