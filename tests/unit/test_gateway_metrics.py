"""The gateway's frame-type reading for its counters: from a frame's first bytes, never a decode."""

import msgspec
import pytest

from gateway.observability import frame_type_of
from proto import frames
from proto.metrics import FRAME_TYPE_UNKNOWN


@pytest.mark.parametrize(
    "frame",
    [
        frames.Ready(uid="u", conn="c"),
        frames.Sent(id="1", mid="m"),
        frames.Error(code="invalid_json", message="x"),
        frames.Pong(),
        frames.Kicked(reason="r"),
        frames.PresenceResult(id="1", online=[]),
    ],
)
def test_type_of_every_encoded_frame(frame: frames.ServerFrame) -> None:
    encoded = frames.encode(frame)
    assert frame_type_of(encoded) == frame.__struct_config__.tag


@pytest.mark.parametrize(
    "raw", [b"", b"[]", b'{"mid":"m","type":"message"}', b'{"type":"nope"}']
)
def test_anything_else_is_unknown(raw: bytes) -> None:
    assert frame_type_of(raw) == FRAME_TYPE_UNKNOWN


def test_a_numbered_copy_is_still_a_message() -> None:
    frame = frames.encode(
        frames.Message(mid="m", sender="a", body=msgspec.Raw(b"1"), ts=1, to="b")
    )
    assert frame_type_of(frames.with_seq(frame, 12)) == "message"
    assert frame_type_of(b'{"seq":3,"mid":"m"}') == FRAME_TYPE_UNKNOWN
