"""A connection's outbox (gateway/connection.py): the frames a writer takes at once."""

from gateway.connection import CloseRequest, Delivered, Outbox
from proto.codes import CloseCode


def test_frames_are_taken_in_order_up_to_a_count_and_a_size() -> None:
    outbox = Outbox(maxsize=10)
    for n in range(5):
        assert outbox.put_nowait(b"%d" % n)
    assert outbox.pop_frames(2, 1000) == [b"0", b"1"]
    # at least one, then stop once the size is passed
    assert outbox.pop_frames(10, 1) == [b"2"]
    assert outbox.pop_frames(10, 1000) == [b"3", b"4"]
    assert not outbox
    assert outbox.pop_frames(10, 1000) == []


def test_a_close_request_stops_the_frames_and_stays_for_the_writer() -> None:
    outbox = Outbox(maxsize=10)
    delivered = Delivered(b"{}", 1.0)
    close = CloseRequest(CloseCode.SLOW_CONSUMER, "too many frames waiting")
    for item in (b"a", delivered, close, b"b"):
        assert outbox.put_nowait(item)
    assert outbox.pop_frames(10, 1000) == [b"a", delivered]
    assert outbox.pop_frames(10, 1000) == []
    assert outbox.pop() == close
    assert outbox.pop_frames(10, 1000) == [b"b"]
    assert not outbox
