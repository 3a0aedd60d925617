"""JSON Schemas of the contract, generated from the frame and envelope classes.

``python -m proto.schemagen`` writes one file per top-level thing into
``proto/schemas/``: the client frames, the server frames, and one per envelope. The
classes in ``frames.py`` and ``envelopes.py`` are the source of truth; a unit test
regenerates the schemas in memory and fails on any difference with the committed
files. This module writes files; it does no network I/O.
"""

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from proto import envelopes, frames
from proto import names as keys

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
    """A frame or envelope class, or a union of frame classes."""


def _envelope(
    filename: str, root: type[envelopes.Envelope], carried_by: str
) -> SchemaSpec:
    summary = (root.__doc__ or "").strip()
    return SchemaSpec(
        filename=f"envelope.{filename}.json",
        title=f"Switchboard envelope {root.__name__}",
        description=f"{summary} Carried by {carried_by}.",
        root=root,
    )


_INBOUND = "the inbound exchange, routing key"
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
    _envelope(
        "conn-opened", envelopes.ConnOpened, f"{_INBOUND} {keys.KEY_CONN_OPENED}"
    ),
    _envelope(
        "conn-closed", envelopes.ConnClosed, f"{_INBOUND} {keys.KEY_CONN_CLOSED}"
    ),
    _envelope("outgoing", envelopes.Outgoing, f"{_INBOUND} {keys.KEY_SEND}"),
    _envelope("acked", envelopes.Acked, f"{_INBOUND} {keys.KEY_ACK}"),
    _envelope("heartbeat", envelopes.Heartbeat, f"{_INBOUND} {keys.KEY_HEARTBEAT}"),
    _envelope(
        "gateway-stopped",
        envelopes.GatewayStopped,
        f"{_INBOUND} {keys.KEY_GATEWAY_STOPPED}",
    ),
    _envelope("saved", envelopes.Saved, f"{_INBOUND} {keys.KEY_SAVED}"),
    _envelope(
        "replay-request", envelopes.ReplayRequest, f"{_INBOUND} {keys.KEY_REPLAY}"
    ),
    _envelope(
        "delivery",
        envelopes.Delivery,
        "the deliveries exchange (routing key = gateway_id)"
        " and the undeliverable exchange",
    ),
)


def build_schema(spec: SchemaSpec) -> dict[str, object]:
    """Return the JSON Schema of one spec, with its dialect, title and description.

    Args:
        spec: the file to build.

    Returns:
        A JSON Schema (draft 2020-12) whose definitions are under ``$defs``.
    """
    (root,), definitions = msgspec.json.schema_components(
        [spec.root], ref_template=_REF_TEMPLATE
    )
    return {
        "$schema": DIALECT,
        "title": spec.title,
        "description": spec.description,
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
