"""What a verified token says about its connection: the uid and the rights of its claims."""

import pytest

from gateway.tokens import Identity, verify_token
from proto.codes import ErrorCode
from proto.errors import FrameRejected
from tests.support.tokens import TEST_JWT_SECRET, make_token

NOW_S = 1_800_000_000


def token(uid: str = "alice", /, **claims: object) -> str:
    return make_token(
        uid, TEST_JWT_SECRET, 0.0, "HS256", **{"exp": NOW_S + 60, **claims}
    )


def test_a_token_without_claims_grants_no_room_and_no_broadcast() -> None:
    identity = verify_token(token(), TEST_JWT_SECRET, NOW_S)
    assert identity == Identity("alice", (), False)
    assert not identity.may_join("live-1")


def test_rooms_and_broadcast_claims_are_read() -> None:
    identity = verify_token(
        token(rooms=["live-*", "team-[ab]", "lobby"], broadcast=True),
        TEST_JWT_SECRET,
        NOW_S,
    )
    assert identity.room_patterns == ("live-*", "team-[ab]", "lobby")
    assert identity.may_broadcast
    assert identity.may_join("live-7")
    assert identity.may_join("team-a")
    assert identity.may_join("lobby")
    assert not identity.may_join("team-c")
    assert not identity.may_join("lobby-2")


def test_room_patterns_are_case_sensitive_whatever_the_platform() -> None:
    identity = verify_token(token(rooms=["Live-*"]), TEST_JWT_SECRET, NOW_S)
    assert identity.may_join("Live-1")
    assert not identity.may_join("live-1")


def test_explicit_false_broadcast_and_empty_rooms_are_valid() -> None:
    identity = verify_token(token(rooms=[], broadcast=False), TEST_JWT_SECRET, NOW_S)
    assert identity == Identity("alice")


@pytest.mark.parametrize(
    "claims",
    [
        {"rooms": "live-*"},
        {"rooms": ["live-*", 7]},
        {"rooms": {"live-*": True}},
        {"rooms": None},
        {"broadcast": "true"},
        {"broadcast": 1},
        {"broadcast": None},
    ],
    ids=[
        "rooms-string",
        "rooms-non-string-item",
        "rooms-object",
        "rooms-null",
        "broadcast-string",
        "broadcast-int",
        "broadcast-null",
    ],
)
def test_malformed_claims_make_the_token_invalid(claims: dict[str, object]) -> None:
    with pytest.raises(FrameRejected) as rejected:
        verify_token(token(**claims), TEST_JWT_SECRET, NOW_S)
    assert rejected.value.code is ErrorCode.INVALID_TOKEN


def test_expired_token_with_good_claims_is_still_expired() -> None:
    with pytest.raises(FrameRejected) as rejected:
        verify_token(
            token(exp=NOW_S - 1, rooms=["live-*"]), TEST_JWT_SECRET, float(NOW_S)
        )
    assert rejected.value.code is ErrorCode.TOKEN_EXPIRED
