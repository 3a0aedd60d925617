"""The per-connection frame bucket: a burst, a refill rate, and a close for a flood."""

from gateway.limits import FrameBucket, Verdict


def test_a_burst_is_accepted_then_frames_are_rejected() -> None:
    bucket = FrameBucket(rate_per_s=1.0, burst=3)
    verdicts = [bucket.on_frame(10.0) for _ in range(4)]
    assert verdicts == [Verdict.ACCEPT] * 3 + [Verdict.REJECT]


def test_the_bucket_refills_at_the_rate_up_to_the_burst() -> None:
    bucket = FrameBucket(rate_per_s=2.0, burst=2)
    assert [bucket.on_frame(0.0) for _ in range(3)][-1] is Verdict.REJECT
    assert bucket.on_frame(0.5) is Verdict.ACCEPT  # one token after 0.5 s at 2/s
    assert bucket.on_frame(0.5) is Verdict.REJECT
    assert [bucket.on_frame(100.0) for _ in range(3)] == [
        Verdict.ACCEPT,
        Verdict.ACCEPT,
        Verdict.REJECT,
    ]


def test_a_steady_client_under_the_rate_is_never_rejected() -> None:
    bucket = FrameBucket(rate_per_s=10.0, burst=2)
    assert {bucket.on_frame(n * 0.1) for n in range(1000)} == {Verdict.ACCEPT}


def test_a_flood_closes_after_enough_rejections_in_a_row() -> None:
    bucket = FrameBucket(rate_per_s=1.0, burst=1, rejected_to_close=3)
    verdicts = [bucket.on_frame(0.0) for _ in range(4)]
    assert verdicts == [Verdict.ACCEPT, Verdict.REJECT, Verdict.REJECT, Verdict.CLOSE]


def test_an_accepted_frame_resets_the_rejections_in_a_row() -> None:
    bucket = FrameBucket(rate_per_s=1.0, burst=1, rejected_to_close=3)
    assert [bucket.on_frame(0.0) for _ in range(3)][-1] is Verdict.REJECT
    assert bucket.on_frame(1.0) is Verdict.ACCEPT
    assert [bucket.on_frame(1.0) for _ in range(2)] == [Verdict.REJECT] * 2


def test_a_clock_going_back_adds_no_tokens() -> None:
    bucket = FrameBucket(rate_per_s=1.0, burst=1)
    assert bucket.on_frame(5.0) is Verdict.ACCEPT
    assert bucket.on_frame(1.0) is Verdict.REJECT
