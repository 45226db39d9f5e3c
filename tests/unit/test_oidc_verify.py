"""The leader's ID token checks that need no issuer (master/oidc_verify.py, master/oidc_service.py):
audience and authorized party, tokens refused before any fetch, the refusal budget, token names.
Signatures, expiry and key rotation against a real provider: tests/integration/test_oidc.py."""
from __future__ import annotations

import asyncio

import pytest

from gfs.errors import InvalidArgument, Unauthenticated
from master.oidc_service import RefusalBudget, token_name_for
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
    budget = RefusalBudget(per_window=3, window_s=3600)
    assert [budget.take() for _ in range(5)] == [True, True, True, False, False]
    assert budget.dropped == 2
    budget.window_s = 0
    assert budget.take()


@pytest.mark.parametrize("host,name", [("laptop.example.com", "oidc-laptop.example.com"),
                                       ("My Laptop!", "oidc-my-laptop"), ("", "oidc-unknown-host")])
def test_sign_in_token_names(host, name):
    assert token_name_for(host) == name
