"""Property tests of the client frame decoder: clean rejections, bodies kept as sent."""

import contextlib
import itertools
import json
import string

import msgspec
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from proto import envelopes, frames, sync
from proto.mids import MID_PATTERN, MidFactory

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5)
    ),
    max_leaves=20,
)
FRAME_TYPES = st.sampled_from([*sorted(frames.CLIENT_FRAME_TYPES), "nope", ""])
FIELD_NAMES = st.sampled_from(
    [
        "type",
        "id",
        "to",
        "group",
        "room",
        "broadcast",
        "transient",
        "body",
        "token",
        "mids",
        "uids",
        "from",
        "uid",
        "reason",
        "since",
        "before",
        "limit",
        "with",
        "mid",
        "x",
    ]
)
FRAME_LIKE = st.dictionaries(FIELD_NAMES, JSON_VALUES, max_size=6).flatmap(
    lambda fields: FRAME_TYPES.map(lambda kind: {**fields, "type": kind})
)
ID_ALPHABET = string.ascii_letters + string.digits + "_-.@+=|~"
IDS = st.text(alphabet=ID_ALPHABET, min_size=1, max_size=frames.MAX_ID_LENGTH)


def decode_or_reject(payload: str | bytes) -> None:
    """Decode; the only acceptable failures are msgspec's (ValidationError is one)."""
    with contextlib.suppress(msgspec.DecodeError):
        frames.decode_client_frame(payload)


@given(st.binary(max_size=512))
@example(b"\xff\xfe")
@example(b'{"type":"send","id":"c","to":"b","body":')
@example(b'{"type":"send","id":"c","to":"b","body":1e999999}')
def test_arbitrary_bytes_only_raise_decode_errors(payload: bytes) -> None:
    decode_or_reject(payload)


@given(st.text(max_size=512))
@example('{"type":"ack","mids":[' + "[" * 2000 + "]" * 2000 + "]}")
def test_arbitrary_text_only_raises_decode_errors(payload: str) -> None:
    decode_or_reject(payload)


@given(FRAME_LIKE)
def test_frame_like_objects_only_raise_decode_errors(fields: dict[str, object]) -> None:
    decode_or_reject(json.dumps(fields))


@given(
    body=JSON_VALUES,
    client_id=IDS,
    to=IDS,
    ensure_ascii=st.booleans(),
    separators=st.sampled_from([(",", ":"), (", ", ": "), (" ,", " :  ")]),
    indent=st.none() | st.integers(min_value=0, max_value=2),
)
def test_send_body_round_trips_byte_for_byte(
    body: object,
    client_id: str,
    to: str,
    ensure_ascii: bool,
    separators: tuple[str, str],
    indent: int | None,
) -> None:
    body_text = json.dumps(
        body, ensure_ascii=ensure_ascii, separators=separators, indent=indent
    )
    text = (
        '{"type":"send","id":'
        + json.dumps(client_id)
        + ',"to":'
        + json.dumps(to)
        + ',"body":'
        + body_text
        + "}"
    )
    frame = frames.decode_client_frame(text.encode())
    assert isinstance(frame, frames.Send)
    assert (frame.id, frame.to) == (client_id, to)
    assert bytes(frame.body) == body_text.encode()
    # And the gateway's pushed message carries those same bytes.
    message = frames.Message(mid="m", sender="a", to=to, body=frame.body, ts=0)
    assert body_text.encode() in frames.encode(message)
    assert json.loads(frames.encode(message))["body"] == json.loads(body_text)


@given(
    client_id=IDS,
    address=st.fixed_dictionaries(
        {},
        optional={"to": IDS, "group": IDS, "room": IDS, "broadcast": st.booleans()},
    ),
)
def test_send_decodes_any_combination_of_addresses(
    client_id: str, address: dict[str, str | bool]
) -> None:
    # The decoder checks shapes only; "exactly one address" is the gateway session's rule.
    text = json.dumps({"type": "send", "id": client_id, **address, "body": 1})
    frame = frames.decode_client_frame(text)
    assert isinstance(frame, frames.Send)
    assert frame.to == address.get("to")
    assert frame.group == address.get("group")
    assert frame.room == address.get("room")
    assert frame.broadcast == address.get("broadcast", False)


@given(value=JSON_VALUES.filter(lambda value: not isinstance(value, bool)))
def test_a_transient_that_is_not_a_boolean_is_refused_at_its_path(
    value: object,
) -> None:
    text = json.dumps(
        {"type": "send", "id": "c1", "to": "b", "body": 1, "transient": value}
    )
    with pytest.raises(msgspec.ValidationError, match=r"\$\.transient"):
        frames.decode_client_frame(text)


@given(
    kind=st.sampled_from(["join", "leave"]),
    client_id=IDS,
    room=IDS,
    uids=st.lists(IDS, max_size=20),
)
def test_room_and_presence_frames_round_trip(
    kind: str, client_id: str, room: str, uids: list[str]
) -> None:
    frame = frames.decode_client_frame(
        json.dumps({"type": kind, "id": client_id, "room": room})
    )
    assert isinstance(frame, frames.Join | frames.Leave)
    assert (frame.id, frame.room) == (client_id, room)
    query = frames.decode_client_frame(
        json.dumps({"type": "presence", "id": client_id, "uids": uids})
    )
    assert query == frames.PresenceQuery(id=client_id, uids=uids)


@given(
    name=st.sampled_from(sorted(envelopes.COMMANDS)),
    fields=st.dictionaries(FIELD_NAMES, JSON_VALUES, max_size=6),
)
def test_command_like_objects_only_raise_decode_errors(
    name: str, fields: dict[str, object]
) -> None:
    with contextlib.suppress(msgspec.DecodeError):
        msgspec.json.decode(json.dumps(fields), type=envelopes.COMMANDS[name])


NOT_INTEGERS = JSON_VALUES.filter(
    lambda value: not isinstance(value, int) or isinstance(value, bool)
)
"""JSON values that are no integer (booleans are not integers)."""


@given(value=st.integers(min_value=-(2**70), max_value=2**70) | NOT_INTEGERS)
@example(value=True)
@example(value=-1)
@example(value=frames.MAX_SEQ + 1)
def test_a_since_is_an_integer_from_0_or_refused_at_its_path(value: object) -> None:
    text = json.dumps({"type": "init", "token": "t", "since": value})
    is_valid = value is None or (
        isinstance(value, int)
        and not isinstance(value, bool)
        and 0 <= value <= frames.MAX_SEQ
    )
    if is_valid:
        assert frames.decode_client_frame(text) == frames.Init(token="t", since=value)  # type: ignore[arg-type]  # an int or None here
    else:
        with pytest.raises(msgspec.ValidationError, match=r"\$\.since`$"):
            frames.decode_client_frame(text)


@given(
    kind=st.sampled_from(["history", "conversations"]),
    field=st.sampled_from(["limit", "before"]),
    value=st.integers(min_value=-(2**70), max_value=2**70) | NOT_INTEGERS,
)
@example(kind="history", field="limit", value=101)
@example(kind="conversations", field="before", value=0)
@example(kind="history", field="limit", value=False)
def test_limit_and_before_are_bounded_or_refused_at_their_path(
    kind: str, field: str, value: object
) -> None:
    text = json.dumps({"type": kind, "id": "c1", "with": "bob", field: value})
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if field == "limit":
        is_valid = is_int and 1 <= value <= frames.MAX_PAGE  # type: ignore[operator]  # an int here
    else:
        is_valid = value is None or (is_int and 1 <= value <= frames.MAX_SEQ)  # type: ignore[operator]  # an int here
    if is_valid:
        frame = frames.decode_client_frame(text)
        assert getattr(frame, field) == value
    else:
        with pytest.raises(msgspec.ValidationError, match=rf"\$\.{field}`$"):
            frames.decode_client_frame(text)


@given(
    client_id=IDS,
    address=st.fixed_dictionaries(
        {}, optional={"with": st.none() | IDS, "group": st.none() | IDS}
    ),
    limit=st.integers(min_value=1, max_value=frames.MAX_PAGE),
)
def test_history_needs_exactly_one_of_with_and_group(
    client_id: str, address: dict[str, str | None], limit: int
) -> None:
    text = json.dumps({"type": "history", "id": client_id, **address, "limit": limit})
    named = [value for value in address.values() if value is not None]
    if len(named) == 1:
        frame = frames.decode_client_frame(text)
        assert frame == frames.HistoryQuery(
            id=client_id,
            peer=address.get("with"),
            group=address.get("group"),
            limit=limit,
        )
    else:
        with pytest.raises(msgspec.ValidationError, match=r"at `\$`$"):
            frames.decode_client_frame(text)


@given(client_id=IDS, mid=IDS.filter(lambda mid: len(mid) <= 64))
def test_read_frames_round_trip(client_id: str, mid: str) -> None:
    text = json.dumps({"type": "read", "id": client_id, "mid": mid})
    assert frames.decode_client_frame(text) == frames.Read(id=client_id, mid=mid)


@given(
    decode=st.sampled_from(
        [
            sync.decode_sync_request,
            sync.decode_history_asked,
            sync.decode_conversations_asked,
            sync.decode_read_asked,
            sync.decode_receipts,
            envelopes.decode_conn_opened,
            envelopes.decode_delivery,
        ]
    ),
    fields=st.dictionaries(
        st.sampled_from(
            [
                "uid",
                "gateway_id",
                "conn_id",
                "client_id",
                "since",
                "limit",
                "before",
                "register",
                "with",
                "group",
                "mid",
                "items",
                "sync",
            ]
        ),
        JSON_VALUES,
        max_size=8,
    ),
)
def test_history_envelope_like_objects_only_raise_decode_errors(
    decode: object, fields: dict[str, object]
) -> None:
    assert callable(decode)
    with contextlib.suppress(msgspec.DecodeError):
        decode(json.dumps(fields).encode())


@given(st.lists(st.integers(min_value=0, max_value=2**40), min_size=1, max_size=50))
def test_mids_strictly_increase_for_any_clock(times_ms: list[int]) -> None:
    factory = MidFactory("abcdef0123")
    mids = [factory.next_mid(now_ms) for now_ms in times_ms]
    assert all(a < b for a, b in itertools.pairwise(mids))
    assert all(MID_PATTERN.fullmatch(mid) for mid in mids)
