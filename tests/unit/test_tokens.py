"""What a verified token says about its connection: the uid and the rights of its claims."""

import jwt
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
    assert identity == Identity("alice", (), False, NOW_S + 60)
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
    assert identity == Identity("alice", expires_s=NOW_S + 60)


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


LONG_SECRET = TEST_JWT_SECRET * 2
"""Long enough for HS512 (64 bytes, RFC 7518 section 3.2)."""


@pytest.mark.parametrize("algorithm", ["HS256", "HS384", "HS512"])
def test_each_hmac_algorithm_verifies_its_own_tokens(algorithm: str) -> None:
    signed = make_token("alice", LONG_SECRET, 0.0, algorithm, exp=NOW_S + 60)
    assert verify_token(signed, LONG_SECRET, NOW_S, algorithm).uid == "alice"


@pytest.mark.parametrize(
    ("signed_with", "configured"),
    [("HS256", "HS512"), ("HS512", "HS256"), ("HS384", "HS256")],
)
def test_a_token_of_another_algorithm_than_the_configured_one_is_invalid(
    signed_with: str, configured: str
) -> None:
    signed = make_token("alice", LONG_SECRET, 0.0, signed_with, exp=NOW_S + 60)
    with pytest.raises(FrameRejected) as rejected:
        verify_token(signed, LONG_SECRET, NOW_S, configured)
    assert rejected.value.code is ErrorCode.INVALID_TOKEN


@pytest.mark.parametrize("configured", ["HS256", "HS512", "RS256"])
def test_alg_none_is_refused_whatever_the_configured_algorithm(configured: str) -> None:
    # pyjwt's own "none" signer; its stubs do not admit the key it ignores.
    unsigned = jwt.encode(
        {"sub": "alice", "exp": NOW_S + 60},
        None,  # type: ignore[arg-type]  # alg "none" takes no key
        algorithm="none",
    )
    with pytest.raises(FrameRejected) as rejected:
        verify_token(unsigned, TEST_JWT_SECRET, NOW_S, configured)
    assert rejected.value.code is ErrorCode.INVALID_TOKEN


def _key_pair(algorithm: str) -> tuple[str, str]:
    """A private and a public PEM key for RS256 or ES256."""
    pytest.importorskip("cryptography")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    private = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if algorithm == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        .decode()
    )
    return private_pem, public_pem


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_a_public_key_algorithm_verifies_tokens_of_its_private_key(
    algorithm: str,
) -> None:
    private_pem, public_pem = _key_pair(algorithm)
    signed = jwt.encode(
        {"sub": "alice", "exp": NOW_S + 60}, private_pem, algorithm=algorithm
    )
    assert verify_token(signed, public_pem, NOW_S, algorithm).uid == "alice"


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_a_public_key_algorithm_refuses_hmac_tokens_and_other_keys(
    algorithm: str,
) -> None:
    _, public_pem = _key_pair(algorithm)
    other_private, _ = _key_pair(algorithm)
    forged = jwt.encode(
        {"sub": "alice", "exp": NOW_S + 60}, other_private, algorithm=algorithm
    )
    # The classic confusion: an HMAC token signed with the public key's text.
    confused = make_token("alice", LONG_SECRET, 0.0, "HS256", exp=NOW_S + 60)
    for token_text in (forged, confused):
        with pytest.raises(FrameRejected) as rejected:
            verify_token(token_text, public_pem, NOW_S, algorithm)
        assert rejected.value.code is ErrorCode.INVALID_TOKEN
