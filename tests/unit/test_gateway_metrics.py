"""The gateway's frame-type reading for its counters: from a frame's first bytes, never a decode."""

import msgspec
import pytest

from gateway.observability import count_delivery, frame_type_of
from proto import envelopes, frames
from proto.metrics import DELIVERY_LATENCY_SECONDS, FRAME_TYPE_UNKNOWN
from proto.mids import mid_time_ms
from runtime.metrics import REGISTRY


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


def test_an_advance_is_not_timed_as_a_delivered_message() -> None:
    mid = "018f0a1b2c3d" + "0" * 14  # 12 hex digits of Unix ms, then the rest
    pushed = envelopes.DeliveryItem(frame=msgspec.Raw(b"{}"), targets=[], mid=mid)
    advance = envelopes.DeliveryItem(
        frame=msgspec.Raw(b"null"), targets=[], mid=mid, advance=True
    )
    before = _latency_count()
    count_delivery(envelopes.Delivery(items=[pushed, advance]), mid_time_ms(mid) + 5)
    assert _latency_count() == before + 1


def test_the_entries_of_a_sync_window_are_not_timed() -> None:
    mid = "018f0a1b2c3d" + "0" * 14
    entry = envelopes.DeliveryItem(frame=msgspec.Raw(b"{}"), targets=[], mid=mid)
    window = envelopes.SyncWindow(to_seq=1, more=False, conn_id="c1")
    before = _latency_count()
    count_delivery(
        envelopes.Delivery(items=[entry], sync=window), mid_time_ms(mid) + 86_400_000
    )
    assert _latency_count() == before


def _latency_count() -> float:
    value = REGISTRY.get_sample_value(f"{DELIVERY_LATENCY_SECONDS}_count")
    return value or 0.0
