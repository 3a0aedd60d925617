"""announcements.py: rows inserted or refused in, ``Saved``, events and error frames out. No I/O."""

from offline_store import announcements
from offline_store.rows import RowKey, UndeliveredRow
from proto import frames
from proto.codes import ErrorCode
from proto.envelopes import (
    MessageOffline,
    MessageRefused,
    Origin,
    Saved,
    SavedUid,
    Target,
)

MID_1 = "0190f0a1b2c30000aaaaaaaaaa"
MID_2 = "0190f0a1b2c30001aaaaaaaaaa"
MID_3 = "0190f0a1b2c40000bbbbbbbbbb"


def test_saved_has_the_smallest_mid_per_uid() -> None:
    keys = [
        RowKey("carol", MID_2),
        RowKey("bob", MID_3),
        RowKey("bob", MID_1),
        RowKey("carol", MID_2),
        RowKey("bob", MID_2),
    ]
    assert announcements.saved_envelope(keys) == Saved(
        uids=[SavedUid("bob", MID_1), SavedUid("carol", MID_2)]
    )


def test_nothing_saved_gives_no_envelope() -> None:
    assert announcements.saved_envelope([]) is None


def test_message_offline_events_one_per_new_row() -> None:
    keys = [RowKey("bob", "m1"), RowKey("carol", "m1"), RowKey("bob", "m1")]
    assert announcements.message_offline_events(keys, 1234) == [
        MessageOffline(uid="bob", mid="m1", ts=1234),
        MessageOffline(uid="carol", mid="m1", ts=1234),
    ]


ORIGIN = Origin("alice", "gw-1", "conn-a", "c7")


def test_refused_row_tells_its_sending_connection_and_backends() -> None:
    row = UndeliveredRow("bob", MID_1, "{}", ORIGIN)
    deliveries, events = announcements.refusals([row], ts_ms=5)
    (outbound,) = deliveries
    assert outbound.gateway_id == "gw-1"
    (notice,) = outbound.delivery.items
    assert notice.targets == [Target("alice", "conn-a")]
    assert not notice.durable
    assert not notice.mid
    error = frames.decode_server_frame(bytes(notice.frame))
    assert isinstance(error, frames.Error)
    assert error == frames.Error(
        code=ErrorCode.RECIPIENT_FULL,
        message=error.message,
        id="c7",
        mid=MID_1,
        to="bob",
    )
    assert events == [
        MessageRefused(
            uid="bob",
            mid=MID_1,
            code=ErrorCode.RECIPIENT_FULL,
            ts=5,
            sender="alice",
            client_id="c7",
        )
    ]


def test_a_refused_row_that_came_twice_is_told_once() -> None:
    row = UndeliveredRow("bob", MID_1, "{}", ORIGIN)
    deliveries, events = announcements.refusals([row, row], ts_ms=5)
    (outbound,) = deliveries
    assert len(outbound.delivery.items) == 1
    assert [e.mid for e in events] == [MID_1]


def test_refusal_without_a_connection_is_an_event_only() -> None:
    backend = Origin("system", "", "", "b1")
    rows = [
        UndeliveredRow("bob", MID_1, "{}", backend),
        UndeliveredRow("bob", MID_2, "{}", None),
    ]
    deliveries, events = announcements.refusals(rows, ts_ms=5)
    assert deliveries == []
    assert [(e.mid, e.sender, e.client_id) for e in events] == [
        (MID_1, "system", "b1"),
        (MID_2, "", ""),
    ]
