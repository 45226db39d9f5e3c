"""OIDC issuers, links and sign-in in the state machine (master/oidc.py) over a real LMDB,
without servers: the leader has verified the ID token; what depends on the replicated state is
decided here, at the command's position in the log."""
from __future__ import annotations

import hashlib

import pytest

from gfs.auth.tokens import new_token, token_hash
from master.oidc import user_name_for
from tests.unit.test_identity_state import NOW, log, people  # noqa: F401 (fixtures)

IDP = "https://idp.example.com"
HOUR = 3600_000


def add_issuer(log, by, url=IDP, **overrides):
    command = {"op": "oidc_add", "issuer": url, "client": "gfs", "audiences": [],
               "user_claim": "email", "auto_create": False, "allowed_domains": [],
               "token_ttl": 12 * HOUR, "replace": False, **overrides}
    return log.run(command, by)


def sign_in(log, claims, *, issuer=IDP, audience="gfs", id_token="idt-1", ttl=0,
            token_name="oidc-laptop"):
    """(result, the gfs token the client made)."""
    token = new_token()
    result = log.run({"op": "oidc_login", "issuer": issuer, "audience": audience,
                      "claims": claims, "id_token_hash": hashlib.sha256(id_token.encode()).digest(),
                      "id_token_expires": NOW + 60_000, "token_hash": token_hash(token),
                      "token_name": token_name, "ttl": ttl})
    return result, token


ALICE = {"sub": "u-1", "email": "alice@example.com", "email_verified": True}


def test_only_administrators_configure_issuers_and_bad_urls_are_refused(log, people):
    code, message = add_issuer(log, people["alice"])["err"]
    assert code == "PERMISSION_DENIED" and "not an administrator" in message
    assert add_issuer(log, people["admin"], url="http://idp.example.com")["err"][0] == "INVALID_ARGUMENT"
    assert add_issuer(log, people["admin"], url="https://idp/?x=1")["err"][0] == "INVALID_ARGUMENT"
    assert "ok" in add_issuer(log, people["admin"], url="http://127.0.0.1:9400")
    assert "ok" in add_issuer(log, people["admin"])
    assert add_issuer(log, people["admin"])["err"][0] == "ALREADY_EXISTS"
    changed = add_issuer(log, people["admin"], auto_create=True, replace=True)["ok"]
    assert changed["auto_create"] and changed["audiences"] == ["gfs"]
    config = log.state.oidc_config(token_hash(people["admin"]), NOW)
    assert [i["issuer"] for i in config["issuers"]] == ["http://127.0.0.1:9400", IDP]
    with pytest.raises(Exception, match="not an administrator"):
        log.state.oidc_config(token_hash(people["alice"]), NOW)
    audit = log.state.audit_log(token_hash(people["admin"]), NOW, 20)
    assert [(r["op"], r["target"]) for r in audit if r["op"] == "oidc_add"][-1] == ("oidc_add", IDP)


def test_an_unlinked_identity_is_refused_without_auto_create_and_signs_in_once_linked(log, people):
    add_issuer(log, people["admin"])
    code, message = sign_in(log, ALICE)[0]["err"]
    assert code == "PERMISSION_DENIED"
    assert message.startswith("no gfs user is linked to alice@example.com at " + IDP)
    code, message = log.err({"op": "oidc_link", "issuer": IDP, "identity": "", "user": "alice"},
                            people["admin"])
    assert code == "INVALID_ARGUMENT" and "value of the issuer's user claim" in message
    assert log.err({"op": "oidc_link", "issuer": IDP, "identity": "x", "user": "nobody-here"},
                   people["admin"])[0] == "NOT_FOUND"
    log.ok({"op": "oidc_link", "issuer": IDP, "identity": "alice@example.com", "user": "alice"},
           people["admin"])
    result, token = sign_in(log, ALICE, id_token="idt-2")
    assert result["ok"]["user"] == "alice" and not result["ok"]["created"]
    me = log.state.whoami(token_hash(token), NOW)
    assert (me["user"], me["token"], me["admin"]) == ("alice", "oidc-laptop", False)
    # Refusals are in the audit log with the external identity.
    audit = log.state.audit_log(token_hash(people["admin"]), NOW, 50)
    refused = [r for r in audit if r["op"] == "oidc_login" and r["result"] != "ok"]
    assert refused[0]["target"] == f"{IDP} email=alice@example.com"
    assert refused[0]["result"].startswith("PERMISSION_DENIED: no gfs user is linked")


def test_auto_create_makes_a_user_with_a_home_and_signing_in_again_replaces_the_token(log, people):
    add_issuer(log, people["admin"], auto_create=True)
    carol = {"sub": "u-3", "email": "Carol.Smith@example.com", "email_verified": True}
    first, old = sign_in(log, carol, id_token="a")
    assert first["ok"]["user"] == "carol-smith" and first["ok"]["created"]
    assert log.state.stat("/carol-smith")["visibility"] == "private"
    second, new = sign_in(log, carol, id_token="b")
    assert second["ok"]["user"] == "carol-smith" and not second["ok"]["created"]
    assert log.state.whoami(token_hash(new), NOW)["user"] == "carol-smith"
    with pytest.raises(Exception, match="revoked"):
        log.state.whoami(token_hash(old), NOW)


def test_auto_create_never_takes_over_an_existing_unlinked_user(log, people):
    add_issuer(log, people["admin"], auto_create=True)
    code, message = sign_in(log, ALICE)[0]["err"]
    assert code == "FAILED_PRECONDITION" and "taken by a user not linked" in message


def test_replayed_id_token_wrong_audience_unverified_email_and_disabled_user_are_refused(log, people):
    add_issuer(log, people["admin"], audiences=["gfs-cli"])
    log.ok({"op": "oidc_link", "issuer": IDP, "identity": "alice@example.com", "user": "alice"},
           people["admin"])
    assert "ok" in sign_in(log, ALICE, audience="gfs-cli", id_token="once")[0]
    code, message = sign_in(log, ALICE, id_token="once")[0]["err"]
    assert code == "UNAUTHENTICATED" and "already used" in message
    code, message = sign_in(log, ALICE, audience="other")[0]["err"]
    assert message == "ID token audience 'other' is not this cluster's client id 'gfs'"
    code, message = sign_in(log, {**ALICE, "email_verified": False}, id_token="u")[0]["err"]
    assert code == "UNAUTHENTICATED" and "not marked verified" in message
    code, message = sign_in(log, {"sub": "u-1"}, id_token="n")[0]["err"]
    assert "no 'email' claim" in message and "'email' scope" in message
    log.ok({"op": "user_set", "name": "alice", "disabled": True}, people["admin"])
    code, message = sign_in(log, ALICE, id_token="d")[0]["err"]
    assert (code, message) == ("PERMISSION_DENIED", "user 'alice' is disabled")
    code, message = sign_in(log, ALICE, issuer="https://other.example.com", id_token="o")[0]["err"]
    assert code == "UNAUTHENTICATED" and "is not configured on this cluster" in message


def test_allowed_domains_subject_claim_ttl_cap_and_removal(log, people):
    add_issuer(log, people["admin"], user_claim="sub", auto_create=True,
               allowed_domains=["example.com"], token_ttl=HOUR)
    code, message = sign_in(log, {"sub": "x", "email": "eve@evil.org", "email_verified": True})[0]["err"]
    assert code == "PERMISSION_DENIED" and "not in a domain" in message
    result, token = sign_in(log, {"sub": "Dave", "email": "d@example.com", "email_verified": True,
                                  "preferred_username": "dave"}, ttl=10 * HOUR, id_token="ok")
    assert result["ok"]["identity"] == "Dave" and result["ok"]["user"] == "dave"
    assert result["ok"]["token"]["expires"] == NOW + HOUR          # capped by the issuer
    gone = log.ok({"op": "oidc_rm", "issuer": IDP}, people["admin"])
    assert gone == {"issuer": IDP, "links": 1}
    assert log.state.oidc_issuer(IDP) is None
    assert log.state.whoami(token_hash(token), NOW)["user"] == "dave"   # stays until revoked


def test_a_refusal_the_leader_made_is_audited(log, people):
    code, message = log.run({"op": "oidc_refused", "identity": IDP,
                             "reason": "the ID token's signature does not verify"})["err"]
    assert (code, message) == ("UNAUTHENTICATED", "the ID token's signature does not verify")
    last = log.state.audit_log(token_hash(people["admin"]), NOW, 1)[0]
    assert (last["who"], last["op"], last["target"]) == ("anonymous", "oidc_refused", IDP)


def test_two_states_fed_the_same_sign_ins_end_byte_identical(tmp_path):
    from master.state import MetadataState
    from tests.unit.test_identity_state import Log
    admin, dumps = new_token(), []
    for name in ("one", "two"):
        with MetadataState(str(tmp_path / name), map_size=1 << 26) as state:
            replica = Log(state)
            replica.ok({"op": "bootstrap", "token_hash": token_hash(admin)}, "system")
            add_issuer(replica, admin, auto_create=True)
            for i, who in enumerate(("ann", "ben", "ann")):
                claims = {"sub": who, "email": f"{who}@example.com", "email_verified": True}
                command = {"op": "oidc_login", "issuer": IDP, "audience": "gfs", "claims": claims,
                           "id_token_hash": bytes([i]) * 32, "id_token_expires": NOW + i,
                           "token_hash": bytes([100 + i]) * 32, "token_name": "oidc-h", "ttl": 0}
                assert "ok" in replica.run(command)
            dumps.append(state.dump())
    assert dumps[0] == dumps[1]
    assert all(dumps[0][db] for db in ("oidc_issuers", "oidc_links", "oidc_used"))


@pytest.mark.parametrize("claims,name", [
    ({"sub": "1", "preferred_username": "Bob"}, "bob"),
    ({"sub": "1", "email": "j.doe+x@example.com"}, "j-doe-x"),
    ({"sub": "42"}, "u42"),
    ({"sub": "x" * 60}, "x" * 32),
])
def test_user_names_made_from_claims_are_valid(claims, name):
    assert user_name_for(claims) == name
