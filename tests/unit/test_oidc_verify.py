"""The leader's ID token checks that need no issuer (master/oidc_verify.py, master/oidc_service.py):
audience and authorized party, tokens refused before any fetch, the refusal budget, token names.
Signatures, expiry and key rotation against a real provider: tests/integration/test_oidc.py."""
from __future__ import annotations

import asyncio
import re
import time

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, OctKey, RSAKey

from gfs.errors import InvalidArgument, Unauthenticated
from gfs.window_budget import WindowBudget
from master.oidc_service import token_name_for
from master.oidc_verify import MAX_ID_TOKEN_CHARS, IdTokenVerifier

RECORD = {"issuer": "https://idp.example.com", "client_id": "gfs", "audiences": ["gfs", "gfs2"]}


@pytest.mark.parametrize("claims,accepted", [
    ({"aud": "gfs"}, "gfs"),
    ({"aud": ["other", "gfs2"]}, "gfs2"),
    ({"aud": ["gfs", "other"], "azp": "gfs"}, "gfs"),
])
def test_an_audience_of_this_cluster_is_accepted(claims, accepted):
    assert IdTokenVerifier._audience(RECORD, claims) == accepted


@pytest.mark.parametrize("claims,message", [
    ({"aud": "x"}, "ID token audience 'x' is not this cluster's client id 'gfs'"),
    ({}, "ID token audience none is not this cluster's client id 'gfs'"),
    ({"aud": 7}, "ID token audience none is not"),
    ({"aud": ["gfs", "other"], "azp": "other"}, "issued to another party ('other')"),
])
def test_other_audiences_are_refused(claims, message):
    with pytest.raises(Unauthenticated, match=message.replace("(", r"\(").replace(")", r"\)")):
        IdTokenVerifier._audience(RECORD, claims)


@pytest.mark.parametrize("token,error,message", [
    ("not-a-jwt", Unauthenticated, "not a signed JWT"),
    ("eyJhbGciOiJub25lIn0.e30.", Unauthenticated, r"not signed \(alg 'none'\)"),
    ("x" * (MAX_ID_TOKEN_CHARS + 1), InvalidArgument, "at most"),
])
def test_malformed_and_unsigned_tokens_are_refused_before_any_fetch(token, error, message):
    verifier = IdTokenVerifier(timeout_s=0.01)          # a fetch would fail: none is made
    with pytest.raises(error, match=message):
        asyncio.run(verifier.verify(RECORD, token, ""))


def test_the_refusal_budget_admits_a_burst_then_drops_until_the_window_turns():
    budget = WindowBudget(per_window=3, window_s=3600)
    assert [budget.take() for _ in range(5)] == [True, True, True, False, False]
    assert budget.dropped == 2
    budget.window_s = 0
    assert budget.take()


@pytest.mark.parametrize("host,name", [("laptop.example.com", "oidc-laptop.example.com"),
                                       ("My Laptop!", "oidc-my-laptop"), ("", "oidc-unknown-host")])
def test_sign_in_token_names(host, name):
    assert token_name_for(host) == name


# --- signature, claims and key rotation, with the issuer's documents served from memory --------

ISSUER = RECORD["issuer"]


class MemoryIssuer(IdTokenVerifier):
    """The verifier with its HTTP GETs answered from memory (and counted): the network is the
    one thing replaced; the integration tests fetch from real providers."""

    def __init__(self, keys: list[RSAKey], **kwargs):
        super().__init__(**kwargs)
        self.keys, self.fetches = keys, 0

    def _fetch_json(self, url: str, what: str) -> dict:
        self.fetches += 1
        if url.endswith("/.well-known/openid-configuration"):
            return {"issuer": ISSUER, "jwks_uri": ISSUER + "/jwks",
                    "id_token_signing_alg_values_supported": ["RS256", "none", "HS256"]}
        return KeySet(self.keys).as_dict()


def _key(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid})


def _token(key: RSAKey, **claims) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": "gfs", "sub": "s1", "iat": now, "exp": now + 300,
            "nonce": "n1", "email": "a@example.com", "email_verified": True, **claims}
    return jwt.encode({"alg": "RS256", "kid": key.kid}, body, key, algorithms=["RS256"])


def verify(verifier, token: str, nonce: str = "n1"):
    return asyncio.run(verifier.verify(RECORD, token, nonce))


def test_a_good_token_verifies_and_keeps_only_the_claims_the_state_needs():
    k1 = _key("k1")
    verified = verify(MemoryIssuer([k1]), _token(k1, name="Alice", groups=["x"]))
    assert verified.audience == "gfs"
    assert verified.claims == {"sub": "s1", "email": "a@example.com", "email_verified": True}
    assert len(verified.token_hash) == 32


@pytest.mark.parametrize("claims,nonce,message", [
    ({"exp": 1000}, "n1", "the ID token expired 1970-01-01 00:16:40 UTC"),
    ({"iat": 4_000_000_000}, "n1", "'iat' claim is not valid"),
    ({"iss": "https://evil.example.com"}, "n1",
     "issuer 'https://evil.example.com' is not https://idp.example.com"),
    ({}, "other", "nonce is not the one this sign-in sent"),
    ({"nonce": None}, "", "carries a nonce but the sign-in sent none"),
    ({"sub": None}, "n1", "lacks a required claim"),
])
def test_claims_are_checked_with_precise_reasons(claims, nonce, message):
    k1 = _key("k1")
    body = {name: value for name, value in claims.items() if value is not None}
    token = _token(k1, **body)
    if claims.get("sub", "") is None:           # drop the claim altogether
        token = jwt.encode({"alg": "RS256", "kid": "k1"},
                           {"iss": ISSUER, "aud": "gfs", "iat": 1, "exp": 4_000_000_000,
                            "nonce": "n1"}, k1, algorithms=["RS256"])
    with pytest.raises(Unauthenticated, match=re.escape(message)):
        verify(MemoryIssuer([k1]), token, nonce)


def test_keys_are_fetched_again_for_an_unknown_kid_but_not_more_than_once_per_gap():
    k1, k2 = _key("k1"), _key("k2")
    verifier = MemoryIssuer([k1], refresh_gap_s=0.0)
    verify(verifier, _token(k1))
    assert verifier.fetches == 2                               # discovery + key set, once
    verify(verifier, _token(k1))
    assert verifier.fetches == 2                               # cached
    verifier.keys = [k1, k2]                                   # the issuer rotates in k2
    verify(verifier, _token(k2))
    assert verifier.fetches == 4
    patient = MemoryIssuer([k1], refresh_gap_s=3600.0)
    verify(patient, _token(k1))
    for _ in range(3):
        with pytest.raises(Unauthenticated, match="a key \\('k2'\\) that .* does not publish"):
            verify(patient, _token(k2))
    assert patient.fetches == 2                                # made-up kids fetch nothing


def test_a_key_that_is_not_the_issuers_and_algorithms_it_does_not_allow_are_refused():
    k1, impostor = _key("k1"), _key("k1")                      # same kid, other key
    with pytest.raises(Unauthenticated, match="signature does not verify"):
        verify(MemoryIssuer([k1]), _token(impostor))
    hs = jwt.encode({"alg": "HS256", "kid": "k1"}, {"iss": ISSUER}, OctKey.generate_key(256),
                    algorithms=["HS256"])
    with pytest.raises(Unauthenticated, match="signed with HS256; accepted are the asymmetric "
                                              "algorithms .* publishes for ID tokens: RS256$"):
        verify(MemoryIssuer([k1]), hs)
