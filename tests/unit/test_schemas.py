"""The committed JSON Schemas in proto/schemas/ match the frame and envelope classes."""

import json

import msgspec
import pytest

from proto import envelopes, frames, schemagen

COMMITTED = {path.name: path for path in schemagen.SCHEMA_DIR.glob("*.json")}
RENDERED = schemagen.render_schemas()
HINT = "run `make schemas` and commit proto/schemas/"


def test_no_schema_file_is_missing() -> None:
    missing = sorted(RENDERED.keys() - COMMITTED.keys())
    assert not missing, f"missing schema files {missing}: {HINT}"


def test_no_schema_file_is_extra() -> None:
    extra = sorted(COMMITTED.keys() - RENDERED.keys())
    assert not extra, f"schema files no class describes {extra}: {HINT}"


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


def test_every_envelope_decoder_has_a_schema() -> None:
    decoded = {
        value.__self__.type
        for name, value in vars(envelopes).items()
        if name.startswith("decode_")
    }
    described = {spec.root for spec in schemagen.SPECS}
    assert decoded <= described, f"envelopes without a schema: {decoded - described}"


def test_every_frame_class_is_in_a_frame_schema() -> None:
    client = json.loads(RENDERED["client-frame.json"])["$defs"]
    server = json.loads(RENDERED["server-frame.json"])["$defs"]
    assert set(client) == {t.__name__ for t in frames.AnyClientFrame.__args__}
    assert set(server) == {t.__name__ for t in frames.AnyServerFrame.__args__}


def test_message_schema_uses_wire_name_from() -> None:
    message = json.loads(RENDERED["server-frame.json"])["$defs"]["Message"]
    assert "from" in message["properties"]
    assert "sender" not in message["properties"]


def test_write_schemas_replaces_stale_and_removes_extra_files(tmp_path) -> None:
    (tmp_path / "client-frame.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "envelope.retired.json").write_text("{}\n", encoding="utf-8")
    changed = schemagen.write_schemas(tmp_path)
    assert "client-frame.json" in changed
    assert "envelope.retired.json" in changed
    written = {p.name: p.read_text(encoding="utf-8") for p in tmp_path.glob("*.json")}
    assert written == RENDERED
    assert schemagen.write_schemas(tmp_path) == []


def test_schemas_accept_what_the_decoders_accept() -> None:
    # A light cross-check without a JSON Schema validator: required fields match.
    send = json.loads(RENDERED["client-frame.json"])["$defs"]["Send"]
    assert send["required"] == ["type", "id", "to", "body"]
    frame = frames.decode_client_frame(b'{"type":"send","id":"c1","to":"bob","body":1}')
    assert isinstance(frame, frames.Send)
    assert msgspec.json.decode(frame.body) == 1
