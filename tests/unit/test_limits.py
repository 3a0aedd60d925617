"""The per-connection limits: a burst, a refill rate, bytes beside frames, a frame that costs
more than one, and a close for a flood."""

from gateway.limits import ConnectionLimits, Limit, Verdict, utf8_length
from proto.limits import ACK_FRAME_COST


def verdicts(limits: ConnectionLimits, now_s: float, count: int) -> list[Verdict]:
    return [limits.on_frame(now_s).verdict for _ in range(count)]


def test_a_burst_is_accepted_then_frames_are_rejected() -> None:
    limits = ConnectionLimits(frames_per_s=1.0, frames_burst=3)
    assert verdicts(limits, 10.0, 4) == [Verdict.ACCEPT] * 3 + [Verdict.REJECT]


def test_the_bucket_refills_at_the_rate_up_to_the_burst() -> None:
    limits = ConnectionLimits(frames_per_s=2.0, frames_burst=2)
    assert verdicts(limits, 0.0, 3)[-1] is Verdict.REJECT
    # One token after 0.5 s at 2/s.
    assert limits.on_frame(0.5).verdict is Verdict.ACCEPT
    assert limits.on_frame(0.5).verdict is Verdict.REJECT
    assert verdicts(limits, 100.0, 3) == [
        Verdict.ACCEPT,
        Verdict.ACCEPT,
        Verdict.REJECT,
    ]


def test_a_steady_client_under_the_rate_is_never_rejected() -> None:
    limits = ConnectionLimits(frames_per_s=10.0, frames_burst=2)
    assert {limits.on_frame(n * 0.1).verdict for n in range(1000)} == {Verdict.ACCEPT}


def test_a_flood_closes_after_enough_rejections_in_a_row() -> None:
    limits = ConnectionLimits(frames_per_s=1.0, frames_burst=1, rejected_to_close=3)
    assert verdicts(limits, 0.0, 4) == [
        Verdict.ACCEPT,
        Verdict.REJECT,
        Verdict.REJECT,
        Verdict.CLOSE,
    ]


def test_an_accepted_frame_resets_the_rejections_in_a_row() -> None:
    limits = ConnectionLimits(frames_per_s=1.0, frames_burst=1, rejected_to_close=3)
    assert verdicts(limits, 0.0, 3)[-1] is Verdict.REJECT
    assert limits.on_frame(1.0).verdict is Verdict.ACCEPT
    assert verdicts(limits, 1.0, 2) == [Verdict.REJECT] * 2


def test_a_clock_going_back_adds_no_tokens() -> None:
    limits = ConnectionLimits(frames_per_s=1.0, frames_burst=1)
    assert limits.on_frame(5.0).verdict is Verdict.ACCEPT
    assert limits.on_frame(1.0).verdict is Verdict.REJECT


def test_large_frames_are_refused_by_bytes_while_small_ones_pass() -> None:
    limits = ConnectionLimits(
        frames_per_s=100.0, frames_burst=100, bytes_per_s=1000.0, bytes_burst=5000
    )
    assert limits.counts_bytes
    assert limits.on_frame(0.0, 4000).is_accepted
    refused = limits.on_frame(0.0, 4000)
    assert (refused.verdict, refused.limit) == (Verdict.REJECT, Limit.BYTES)
    assert limits.on_frame(0.0, 900).is_accepted  # the refused frame took nothing
    assert limits.on_frame(3.0, 3000).is_accepted  # 3 s at 1000 B/s


def test_bytes_are_not_counted_when_the_rate_is_zero() -> None:
    limits = ConnectionLimits(frames_per_s=100.0, frames_burst=100, bytes_per_s=0.0)
    assert not limits.counts_bytes
    assert all(limits.on_frame(0.0, 10**9).is_accepted for _ in range(50))


def test_a_refused_frame_takes_no_bytes_and_no_frame() -> None:
    limits = ConnectionLimits(
        frames_per_s=1.0, frames_burst=1, bytes_per_s=10.0, bytes_burst=10
    )
    assert limits.on_frame(0.0, 20).limit is Limit.BYTES
    assert limits.on_frame(0.0, 10).is_accepted  # the frame's token was still there
    assert limits.on_frame(0.0, 0).limit is Limit.FRAMES


def test_a_costly_frame_takes_its_extra_tokens_or_is_refused() -> None:
    limits = ConnectionLimits(frames_per_s=10.0, frames_burst=20)
    assert limits.on_frame(0.0).is_accepted
    assert limits.on_cost(0.0, 9).is_accepted  # a frame of cost 10
    assert limits.on_frame(0.0).is_accepted
    refused = limits.on_cost(0.0, 10)  # 9 tokens left
    assert (refused.verdict, refused.limit) == (Verdict.REJECT, Limit.FRAMES)
    assert limits.on_cost(0.0, 0).is_accepted
    assert limits.on_cost(1.0, 10).is_accepted  # refilled


def test_utf8_length_counts_bytes_as_sent() -> None:
    assert utf8_length("abc") == 3
    assert utf8_length("é€😀") == 2 + 3 + 4
    assert utf8_length(b"\x00\x01") == 2


def test_an_ack_gives_back_most_of_its_frame() -> None:
    limits = ConnectionLimits(frames_per_s=1.0, frames_burst=10)
    # Fifty acks cost five frames, where fifty frames would be refused.
    for _ in range(50):
        assert limits.on_frame(0.0).is_accepted
        assert limits.on_cost(0.0, ACK_FRAME_COST - 1).is_accepted
    # About five frames are left.
    assert verdicts(limits, 0.0, 4) == [Verdict.ACCEPT] * 4
    assert Verdict.REJECT in verdicts(limits, 0.0, 2)


def test_a_refund_never_fills_the_bucket_past_its_burst() -> None:
    limits = ConnectionLimits(frames_per_s=1.0, frames_burst=3)
    assert limits.on_frame(0.0).is_accepted
    assert limits.on_cost(0.0, -5).is_accepted
    assert [limits.on_frame(0.0).verdict for _ in range(4)] == [
        Verdict.ACCEPT,
        Verdict.ACCEPT,
        Verdict.ACCEPT,
        Verdict.REJECT,
    ]
