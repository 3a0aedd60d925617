"""Tokens of an identity provider: audience, issuer, leeway, finite times, keys by kid, and the
``refresh`` that replaces a connection's token before it expires."""

import json
import math

import jwt
import pytest

from gateway.credentials import Verifier
from gateway.effects import Close, FetchKeys, Publish, Reply
from gateway.keyset import Fetch, KeySet
from gateway.session import Session
from gateway.tokens import Identity, TokenRules, key_id, verify_token
from proto.codes import CloseCode, ErrorCode
from proto.errors import FrameRejected
from proto.mids import MidFactory
from proto.names import KEY_CONN_OPENED
from tests.support.idp import AUDIENCE, ISSUER, IdentityProvider
from tests.support.tokens import TEST_JWT_SECRET, make_token

NOW_S = 1_800_000_000
NOW_MS = NOW_S * 1000
RULES = TokenRules("RS256", (AUDIENCE,), ISSUER, 0.0)


@pytest.fixture(scope="module")
def idp() -> IdentityProvider:
    return IdentityProvider()


def idp_token(idp: IdentityProvider, **claims: object) -> str:
    return idp.token(
        "alice", 600.0, None, **{"exp": NOW_S + 60, "iat": NOW_S, **claims}
    )


def hs_token(uid: str = "alice", **claims: object) -> str:
    return make_token(
        uid, TEST_JWT_SECRET, 0.0, "HS256", **{"exp": NOW_S + 60, **claims}
    )


def public_key(idp: IdentityProvider) -> jwt.PyJWK:
    return jwt.PyJWK(idp.current.public_jwk())


def code_of(token: str, key: object, rules: TokenRules, now_s: float = NOW_S) -> str:
    with pytest.raises(FrameRejected) as rejected:
        verify_token(token, key, now_s, rules=rules)  # type: ignore[arg-type]
    return rejected.value.code


# Audience and issuer


def test_a_keycloak_like_token_with_aud_and_iss_is_accepted(
    idp: IdentityProvider,
) -> None:
    identity = verify_token(idp_token(idp), public_key(idp), NOW_S, rules=RULES)
    assert identity == Identity("alice", expires_s=NOW_S + 60)


def test_a_token_with_aud_is_refused_when_no_audience_is_configured(
    idp: IdentityProvider,
) -> None:
    rules = TokenRules("RS256", (), ISSUER)
    assert code_of(idp_token(idp), public_key(idp), rules) == ErrorCode.INVALID_TOKEN


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "another-service"},
        {"aud": ["account"]},
        {"aud": None},
        {"iss": "https://evil.example/"},
        {"iss": None},
        {"iss": 7},
    ],
    ids=[
        "aud-other",
        "aud-list-without-ours",
        "aud-missing",
        "iss-other",
        "iss-missing",
        "iss-number",
    ],
)
def test_another_audience_or_issuer_is_refused(
    idp: IdentityProvider, claims: dict[str, object]
) -> None:
    payload = {
        "sub": "alice",
        "exp": NOW_S + 60,
        "iss": ISSUER,
        "aud": [AUDIENCE, "account"],
        **claims,
    }
    # Signed as bytes: PyJWT's encoder refuses to mint some of these.
    token = jwt.PyJWS().encode(
        json.dumps({k: v for k, v in payload.items() if v is not None}).encode(),
        idp.current.private,
        algorithm="RS256",
        headers={"kid": idp.current.kid},
    )
    assert code_of(token, public_key(idp), RULES) == ErrorCode.INVALID_TOKEN


def test_one_of_several_audiences_is_enough(idp: IdentityProvider) -> None:
    rules = TokenRules("RS256", ("other", AUDIENCE), ISSUER)
    assert verify_token(idp_token(idp), public_key(idp), NOW_S, rules=rules).uid


# Leeway and time claims


@pytest.mark.parametrize(
    ("exp_offset_s", "leeway_s", "code"),
    [
        (-1, 0.0, ErrorCode.TOKEN_EXPIRED),
        (0, 0.0, ErrorCode.TOKEN_EXPIRED),
        (-1, 5.0, None),
        (-5, 5.0, ErrorCode.TOKEN_EXPIRED),
    ],
)
def test_the_leeway_extends_exp(
    exp_offset_s: int, leeway_s: float, code: ErrorCode | None
) -> None:
    token = hs_token(exp=NOW_S + exp_offset_s)
    rules = TokenRules(leeway_s=leeway_s)
    if code is None:
        assert verify_token(token, TEST_JWT_SECRET, NOW_S, rules=rules).uid == "alice"
    else:
        assert code_of(token, TEST_JWT_SECRET, rules) == code


def test_the_leeway_lets_an_nbf_slightly_ahead_pass() -> None:
    token = hs_token(nbf=NOW_S + 3)
    assert code_of(token, TEST_JWT_SECRET, TokenRules()) == ErrorCode.TOKEN_EXPIRED
    assert verify_token(token, TEST_JWT_SECRET, NOW_S, rules=TokenRules(leeway_s=5))


def _with_raw_payload(payload_json: str) -> str:
    """An HS256 token whose payload is this exact JSON text (json.dumps would refuse NaN)."""
    header = jwt.utils.base64url_encode(b'{"alg":"HS256","typ":"JWT"}')
    body = jwt.utils.base64url_encode(payload_json.encode())
    signing_input = header + b"." + body
    algorithm = jwt.get_algorithm_by_name("HS256")
    signature = algorithm.sign(signing_input, algorithm.prepare_key(TEST_JWT_SECRET))
    return (signing_input + b"." + jwt.utils.base64url_encode(signature)).decode()


@pytest.mark.parametrize(
    "payload",
    [
        '{"sub":"alice","exp":NaN}',
        '{"sub":"alice","exp":Infinity}',
        '{"sub":"alice","exp":-Infinity}',
        '{"sub":"alice","exp":1e400}',
        '{"sub":"alice","exp":true}',
        '{"sub":"alice","exp":"1900000000"}',
        '{"sub":"alice","exp":1900000000,"nbf":NaN}',
    ],
)
def test_an_exp_or_nbf_that_is_not_a_finite_number_is_invalid(payload: str) -> None:
    token = _with_raw_payload(payload)
    assert code_of(token, TEST_JWT_SECRET, TokenRules()) == ErrorCode.INVALID_TOKEN


def test_key_id_reads_the_header_kid(idp: IdentityProvider) -> None:
    assert key_id(idp_token(idp)) == idp.current.kid
    assert key_id(hs_token()) is None
    with pytest.raises(FrameRejected):
        key_id("not.a.token")


# The key set


def test_the_key_set_keeps_signing_keys_of_its_algorithm_by_kid(
    idp: IdentityProvider,
) -> None:
    other = IdentityProvider("ES256")
    keyset = KeySet("RS256", 10.0)
    document = {
        "keys": [
            *idp.jwks()["keys"],
            *other.jwks()["keys"],
            {**idp.current.public_jwk(), "kid": "enc", "use": "enc"},
            {"kty": "RSA", "kid": "broken", "n": "??", "e": "AQAB"},
            "not a key",
        ]
    }
    state = keyset.fetched(document)
    assert state.kids == (idp.current.kid,)
    found = keyset.lookup(idp.current.kid, 0.0)
    assert isinstance(found, jwt.PyJWK)


def test_an_unknown_kid_asks_for_one_fetch_per_interval() -> None:
    keyset = KeySet("RS256", 10.0)
    assert keyset.lookup("new", 100.0) is Fetch.NEEDED
    keyset.fetch_started(100.0)
    assert (
        keyset.lookup("other", 100.5) is Fetch.NEEDED
    )  # waits for the fetch under way
    assert not keyset.may_fetch(100.5)
    keyset.fetched({"keys": []})
    with pytest.raises(FrameRejected) as rejected:
        keyset.lookup("new", 105.0)  # a flood of made-up kids fetches nothing more
    assert rejected.value.code is ErrorCode.INVALID_TOKEN
    assert keyset.lookup("new", 110.0) is Fetch.NEEDED
    assert keyset.may_fetch(110.0)


def test_a_failed_fetch_keeps_the_keys_and_answers_unavailable_for_new_kids(
    idp: IdentityProvider,
) -> None:
    keyset = KeySet("RS256", 10.0)
    keyset.fetched(idp.jwks())
    keyset.fetch_started(0.0)
    state = keyset.fetch_failed()
    assert state.has_failed
    assert isinstance(keyset.lookup(idp.current.kid, 1.0), jwt.PyJWK)
    with pytest.raises(FrameRejected) as rejected:
        keyset.lookup("rotated", 1.0)
    assert rejected.value.code is ErrorCode.UNAVAILABLE
    with pytest.raises(ValueError, match="list of keys"):
        keyset.fetched({"keys": "none"})
    assert isinstance(keyset.lookup(idp.current.kid, 1.0), jwt.PyJWK)


def test_a_rotation_drops_the_keys_no_longer_published() -> None:
    idp = IdentityProvider()
    old = idp.current
    keyset = KeySet("RS256", 10.0)
    keyset.fetched(idp.jwks())
    idp.rotate(keep_old=False)
    keyset.fetch_started(0.0)
    keyset.fetched(idp.jwks())
    assert keyset.kids == (idp.current.kid,)
    with pytest.raises(FrameRejected):
        keyset.lookup(old.kid, 1.0)


# Sessions: init through the key set, refresh, expiry


def jwks_session(idp: IdentityProvider, keyset: KeySet) -> Session:
    verifier = Verifier(keyset, RULES)
    return Session("conn1", "gw1", verifier, MidFactory("00000000aa"))


def init(session: Session, token: str, may_fetch_keys: bool = True) -> list:
    text = json.dumps({"type": "init", "token": token})
    return session.on_text(text, NOW_MS, may_fetch_keys=may_fetch_keys)


def test_an_init_with_an_unknown_kid_fetches_then_verifies(
    idp: IdentityProvider,
) -> None:
    keyset = KeySet("RS256", 10.0)
    session = jwks_session(idp, keyset)
    assert init(session, idp_token(idp)) == [FetchKeys()]
    keyset.fetch_started(NOW_S)
    keyset.fetched(idp.jwks())
    (opened,) = init(session, idp_token(idp), may_fetch_keys=False)
    assert isinstance(opened, Publish)
    assert opened.routing_key == KEY_CONN_OPENED
    assert session.uid == "alice"
    assert session.expires_s == NOW_S + 60


def test_an_init_whose_keys_cannot_be_fetched_closes_with_try_again_later(
    idp: IdentityProvider,
) -> None:
    keyset = KeySet("RS256", 10.0)
    session = jwks_session(idp, keyset)
    keyset.fetch_started(NOW_S)
    keyset.fetch_failed()
    reply, close = init(session, idp_token(idp), may_fetch_keys=False)
    assert isinstance(reply, Reply)
    assert reply.error_code is ErrorCode.UNAVAILABLE
    assert close == Close(CloseCode.TRY_AGAIN_LATER, "unavailable")
    assert session.uid is None


def hs_session(leeway_s: float = 0.0) -> Session:
    verifier = Verifier(TEST_JWT_SECRET, TokenRules(leeway_s=leeway_s))
    session = Session("conn1", "gw1", verifier, MidFactory("00000000aa"))
    session.on_text(json.dumps({"type": "init", "token": hs_token()}), NOW_MS)
    return session


def refresh(session: Session, token: str) -> dict:
    text = json.dumps({"type": "refresh", "id": "r1", "token": token})
    (reply,) = session.on_text(text, NOW_MS + 1000)
    assert isinstance(reply, Reply)
    return json.loads(reply.frame)


def test_expiry_is_exp_plus_the_leeway_and_infinite_before_init() -> None:
    assert Session("c", "g", TEST_JWT_SECRET, MidFactory("00000000aa")).expires_s == (
        math.inf
    )
    assert hs_session().expires_s == NOW_S + 60
    assert hs_session(leeway_s=30).expires_s == NOW_S + 90


def test_a_refresh_with_a_later_token_extends_the_connection() -> None:
    session = hs_session()
    later = hs_token(exp=NOW_S + 3600, rooms=["live-*"])
    assert refresh(session, later) == {"type": "refreshed", "id": "r1"}
    assert session.expires_s == NOW_S + 3600
    assert session.identity is not None
    assert session.identity.may_join("live-1")


@pytest.mark.parametrize(
    ("token", "code"),
    [
        (hs_token("mallory", exp=NOW_S + 3600), ErrorCode.INVALID_TOKEN),
        (make_token("alice", "x" * 40, 0.0, exp=NOW_S + 3600), ErrorCode.INVALID_TOKEN),
        (hs_token(exp=NOW_S - 1), ErrorCode.TOKEN_EXPIRED),
        ("not-a-token", ErrorCode.INVALID_TOKEN),
    ],
    ids=["another-sub", "bad-signature", "expired", "garbage"],
)
def test_a_refused_refresh_keeps_the_old_token(token: str, code: ErrorCode) -> None:
    session = hs_session()
    before = session.identity
    answer = refresh(session, token)
    assert answer["type"] == "error"
    assert (answer["id"], answer["code"]) == ("r1", code)
    assert session.identity == before
    assert session.expires_s == NOW_S + 60


def test_a_refresh_before_init_is_not_initialized() -> None:
    session = Session("conn1", "gw1", TEST_JWT_SECRET, MidFactory("00000000aa"))
    answer = refresh(session, hs_token())
    assert (answer["id"], answer["code"]) == ("r1", ErrorCode.NOT_INITIALIZED)


def test_a_refresh_with_an_unknown_kid_fetches_first(idp: IdentityProvider) -> None:
    keyset = KeySet("RS256", 10.0)
    keyset.fetched(idp.jwks())
    session = jwks_session(idp, keyset)
    init(session, idp_token(idp))
    rotated = IdentityProvider()
    text = json.dumps(
        {"type": "refresh", "id": "r2", "token": rotated.token("alice", 600.0)}
    )
    assert session.on_text(text, NOW_MS) == [FetchKeys()]
    (reply,) = session.on_text(text, NOW_MS, may_fetch_keys=False)
    assert isinstance(reply, Reply)
    assert reply.error_code is ErrorCode.UNAVAILABLE


def test_verifier_refuses_another_sub_with_the_refresh_id() -> None:
    verifier = Verifier(TEST_JWT_SECRET, TokenRules())
    current = verifier.verify(hs_token(), NOW_S, may_fetch_keys=True)
    assert isinstance(current, Identity)
    with pytest.raises(FrameRejected) as rejected:
        verifier.refreshed(current, hs_token("bob"), NOW_S, True, "r9")
    assert (rejected.value.code, rejected.value.client_id) == (
        ErrorCode.INVALID_TOKEN,
        "r9",
    )


def test_es256_keys_of_a_key_set_verify_es256_tokens() -> None:
    idp = IdentityProvider("ES256")
    keyset = KeySet("ES256", 10.0)
    keyset.fetched(idp.jwks())
    verifier = Verifier(keyset, TokenRules("ES256", (AUDIENCE,), ISSUER))
    identity = verifier.verify(idp_token(idp), NOW_S, may_fetch_keys=False)
    assert identity == Identity("alice", expires_s=NOW_S + 60)
    rs256 = IdentityProvider()
    keyset.fetched({"keys": [*idp.jwks()["keys"], *rs256.jwks()["keys"]]})
    assert keyset.kids == (idp.current.kid,)  # a key of another algorithm is left out
