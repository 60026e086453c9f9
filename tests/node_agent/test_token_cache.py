"""Verified tasting tokens are remembered (node_agent/auth.py): a token's next request skips the signature check,
never its expiry, its audience or the bound on what is remembered."""

import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node_agent import auth
from node_agent.errors import AgentError

ISSUER = "http://tracker.test"


def token(key, *, aud="n1", jti="j1", exp_in=600) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": aud,
        "sub": "anon:x",
        "jti": jti,
        "iat": now,
        "exp": now + exp_in,
        "max_requests": 3,
        "max_output_tokens": 256,
    }
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": "k1", "typ": auth.TOKEN_TYPE})


@pytest.fixture
def key():
    return Ed25519PrivateKey.generate()


def verifier(key) -> auth.TokenVerifier:
    return auth.TokenVerifier(node_id="n1", issuer=ISSUER, keys={"k1": key.public_key()})


def test_a_verified_token_is_not_verified_again(key):
    checker = verifier(key)
    first = checker.verify("Bearer " + token(key))
    checker.keys = {}  # no key could verify anything now: only the remembered token still passes
    assert checker.verify("Bearer " + token(key)) is first
    with pytest.raises(AgentError) as refused:
        checker.verify("Bearer " + token(key, jti="j2"))
    assert refused.value.status == 401


def test_a_remembered_token_still_expires(key, monkeypatch):
    checker = verifier(key)
    tasting = "Bearer " + token(key, exp_in=5)
    assert checker.verify(tasting).jti == "j1"
    later = time.time() + 5 + auth.LEEWAY_SEC + 1
    monkeypatch.setattr(auth.time, "time", lambda: later)
    with pytest.raises(AgentError) as refused:
        checker.verify(tasting)
    assert refused.value.status == 401 and "expired" in refused.value.message
    assert not checker.verified


def test_the_audience_is_checked_per_node_and_the_memory_is_bounded(key, monkeypatch):
    checker = verifier(key)
    tasting = "Bearer " + token(key)
    checker.verify(tasting)
    with pytest.raises(AgentError) as refused:
        checker.verify(tasting, node_id="n2")  # the relay's verifier serves many nodes
    assert refused.value.status == 403 and refused.value.code == "wrong_node"
    monkeypatch.setattr(auth, "VERIFIED_CACHE_ENTRIES", 2)
    for jti in ("j2", "j3"):
        checker.verify("Bearer " + token(key, jti=jti))
    assert [claims.jti for claims in checker.verified.values()] == ["j2", "j3"]
