"""gfs/auth without servers: the token format, the scope grammar and the one checker."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gfs.auth.checker import (ANONYMOUS, DELETE, LIST, PRIVATE, PUBLIC, READ, SHARE, VISIBLE,
                              WRITE, Decision, Principal, decide, refusal)
from gfs.auth.scopes import format_scope, parse_scope, parse_scopes, path_matches
from gfs.auth.tokens import (PREFIX, TOKEN_CHARS, new_token, parse_token, short_id, token_hash)
from gfs.errors import InvalidArgument, Unauthenticated

# --- tokens --------------------------------------------------------------------------------------


def test_tokens_are_recognisable_random_and_checked():
    a, b = new_token(), new_token()
    assert a != b and a.startswith(PREFIX) and len(a) == TOKEN_CHARS
    assert len(parse_token(a)) == 32
    assert token_hash(a) != token_hash(b) and len(token_hash(a)) == 32
    assert len(short_id(token_hash(a))) == 12


@pytest.mark.parametrize("mangle, message", [
    (lambda t: t[:-1], "truncated"),
    (lambda t: t + "x", "characters"),
    (lambda t: "xyz_" + t[4:], "starts with 'gfs_'"),
    (lambda t: t[:10] + ("A" if t[10] != "A" else "B") + t[11:], "check value"),
    (lambda t: t[:-3] + "!!!", "base64url"),
])
def test_a_mistyped_or_truncated_token_is_malformed_not_unknown(mangle, message):
    with pytest.raises(Unauthenticated, match="malformed token") as err:
        parse_token(mangle(new_token()))
    assert message in str(err.value)


@given(st.text(max_size=80))
def test_no_text_but_a_real_token_parses(text):
    with pytest.raises(Unauthenticated):
        parse_token(text)


# --- scopes --------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, canonical", [
    ("storage.alice.files:read,list", "storage.alice.files:list,read"),
    ('storage.alice.files: ["read", "list"]', "storage.alice.files:list,read"),
    ("storage.alice.files@/alice/backups/**:read,write",
     "storage.alice.files@/alice/backups/**:read,write"),
    ("storage.alice.files:*", "storage.alice.files:*"),
    ("compute.alice.containers:create,read,delete", "compute.alice.containers:create,delete,read"),
    ("storage.*.files:read", "storage.*.files:read"),
])
def test_scopes_parse_into_a_canonical_form(text, canonical):
    scope = parse_scope(text)
    assert format_scope(scope) == canonical
    assert format_scope(parse_scope(canonical)) == canonical


@pytest.mark.parametrize("text, message", [
    ("storage.alice.files", "of the form"),
    ("storage.alice.files:", "at least one verb"),
    ("storage.alice.files:fly", "no verb fly"),
    ("storage.alice.blobs:read", "unknown resource"),
    ("compute.alice.containers@/x:read", "only storage"),
    ("storage.Alice.files:read", "of the form"),
    ('storage.alice.files: ["read",', "JSON list"),
    ("storage.alice.files@/a//b:read", "empty"),
])
def test_bad_scopes_say_what_is_wrong(text, message):
    with pytest.raises(InvalidArgument, match=message):
        parse_scope(text)


def test_star_means_every_right_of_the_owner():
    assert parse_scope("*") is None
    assert parse_scopes(["storage.a.files:read", "*"]) is None
    with pytest.raises(InvalidArgument):
        parse_scopes([])


@pytest.mark.parametrize("pattern, path, matches", [
    ("/alice/backups/**", "/alice/backups", True),
    ("/alice/backups/**", "/alice/backups/2026/db.tar", True),
    ("/alice/backups/**", "/alice/backupsX", False),
    ("/alice/*.txt", "/alice/a.txt", True),
    ("/alice/*.txt", "/alice/d/a.txt", False),
    ("/alice/**/x", "/alice/x", True),
    ("/alice/**/x", "/alice/a/b/x", True),
    ("/", "/", True),
    ("/", "/a", False),
])
def test_path_globs(pattern, path, matches):
    assert path_matches(pattern, path) is matches


# --- the checker ---------------------------------------------------------------------------------

ALICE = Principal(user="alice", token="laptop")
BOB = Principal(user="bob", token="laptop")
ADMIN = Principal(user="admin", admin=True, token="root")
NARROW = Principal(user="alice", token="ci",
                   scopes=(parse_scope("storage.alice.files@/alice/backups/**:read,list,write"),))
READER = Principal(user="alice", token="ro", scopes=(parse_scope("storage.alice.files:read,list"),))
BOB_WITH_ALICE_SCOPE = Principal(user="bob", token="x",
                                 scopes=(parse_scope("storage.alice.files:*"),))

A, D, H = Decision.ALLOW, Decision.DENY, Decision.HIDE


@pytest.mark.parametrize("who, verb, visibility, path, expected", [
    # the owner may do everything on their own files, whatever the visibility
    (ALICE, READ, PRIVATE, "/alice/x", A), (ALICE, WRITE, PRIVATE, "/alice/x", A),
    (ALICE, DELETE, PUBLIC, "/alice/x", A), (ALICE, SHARE, VISIBLE, "/alice/x", A),
    # another user: private does not exist, visible lists, public reads; never writes
    (BOB, LIST, PRIVATE, "/alice/x", H), (BOB, READ, PRIVATE, "/alice/x", H),
    (BOB, WRITE, PRIVATE, "/alice/x", H),
    (BOB, LIST, VISIBLE, "/alice/x", A), (BOB, READ, VISIBLE, "/alice/x", D),
    (BOB, WRITE, VISIBLE, "/alice/x", D),
    (BOB, LIST, PUBLIC, "/alice/x", A), (BOB, READ, PUBLIC, "/alice/x", A),
    (BOB, DELETE, PUBLIC, "/alice/x", D), (BOB, SHARE, PUBLIC, "/alice/x", D),
    # anonymous sees public only
    (ANONYMOUS, LIST, VISIBLE, "/alice/x", H), (ANONYMOUS, READ, PUBLIC, "/alice/x", A),
    (ANONYMOUS, WRITE, PUBLIC, "/alice/x", D),
    # administrators may do everything
    (ADMIN, READ, PRIVATE, "/alice/x", A), (ADMIN, DELETE, PRIVATE, "/alice/x", A),
    # a token narrowed to a path and verbs
    (NARROW, WRITE, PRIVATE, "/alice/backups/db", A), (NARROW, READ, PRIVATE, "/alice/backups", A),
    (NARROW, WRITE, PRIVATE, "/alice/photos/a", H), (NARROW, DELETE, PRIVATE, "/alice/backups/db", D),
    (READER, READ, PRIVATE, "/alice/x", A), (READER, WRITE, PRIVATE, "/alice/x", D),
    # a scope never exceeds its owner: bob's token naming alice's files gives nothing
    (BOB_WITH_ALICE_SCOPE, READ, PRIVATE, "/alice/x", H),
])
def test_decision_matrix(who, verb, visibility, path, expected):
    assert decide(who, verb, "alice", visibility, path) is expected


def test_refusals_name_who_what_and_where():
    err = refusal(NARROW, Decision.DENY, DELETE, "alice", "/alice/backups/db")
    assert err.code == "PERMISSION_DENIED"
    assert err.message == ("token 'ci' (alice) lacks storage.alice.files:delete on "
                           "/alice/backups/db")
    hidden = refusal(BOB, Decision.HIDE, READ, "alice", "/alice/x")
    assert hidden.code == "NOT_FOUND" and "alice" not in hidden.message.replace("/alice/x", "")
