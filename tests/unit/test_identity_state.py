"""Identity and access in the state machine (master/identity.py, master/access.py,
master/namespace.py, master/usage.py) over a real LMDB, without servers: every decision is made
at the command's position in the log."""
from __future__ import annotations

import itertools

import pytest

from gfs.auth.tokens import new_token, token_hash
from master.state import MetadataState
from master.store import Tx

NOW = 1_000_000


class Log:
    """Applies commands one entry at a time, as a Raft log would."""

    def __init__(self, state: MetadataState):
        self.state = state
        self.index = itertools.count(1)

    def batch(self, *commands: dict) -> list[dict]:
        return self.state.apply_batch(next(self.index), [{"now": NOW, **c} for c in commands])

    def run(self, command: dict, as_=None) -> dict:
        """One command as the token `as_` (None: anonymous; "system": no auth field)."""
        if as_ != "system":
            command = {**command, "auth": None if as_ is None else token_hash(as_)}
        return self.batch(command)[0]

    def ok(self, command: dict, as_=None) -> dict:
        result = self.run(command, as_)
        assert "ok" in result, result
        return result["ok"]

    def err(self, command: dict, as_=None) -> tuple[str, str]:
        result = self.run(command, as_)
        assert "err" in result, result
        return tuple(result["err"])

    def token(self, owner: str, name: str = "t", scopes=("*",), expires: int = 0, by=None) -> str:
        token = new_token()
        self.ok({"op": "token_create", "token_hash": token_hash(token), "name": name,
                 "principal": owner, "expires": expires, "scopes": list(scopes)}, by)
        return token

    def put(self, path: str, size: int, as_=None, overwrite: bool = False) -> int:
        ino = self.ok({"op": "create", "path": path, "replication": 1, "storage_class": "",
                       "chunk_size": 1 << 20, "mode": 0o644, "owner": "",
                       "overwrite": overwrite, "size": size}, as_)["inode"]
        handle = self.ok({"op": "add_chunk", "inode": ino, "index": 0, "replicas": ["a"]},
                         as_)["handle"]
        self.ok({"op": "commit", "inode": ino, "size": size,
                 "chunks": [{"handle": handle, "length": size, "checksum": 7}]}, as_)
        return ino

    def mkdir(self, path: str, as_=None, parents=False):
        return self.run({"op": "mkdir", "path": path, "parents": parents, "mode": 0o755,
                         "owner": ""}, as_)


@pytest.fixture
def log(tmp_path):
    with MetadataState(str(tmp_path / "meta"), map_size=1 << 26) as state:
        yield Log(state)


@pytest.fixture
def people(log):
    """admin (bootstrapped), alice and bob with a full token each."""
    admin = new_token()
    assert log.ok({"op": "bootstrap", "token_hash": token_hash(admin)}, "system") == {"created": True}
    for name in ("alice", "bob"):
        log.ok({"op": "user_add", "name": name, "admin": False}, admin)
    return {"admin": admin, "alice": log.token("alice", by=admin), "bob": log.token("bob", by=admin)}


def test_bootstrap_makes_the_first_admin_once(log):
    first, second = new_token(), new_token()
    assert log.ok({"op": "bootstrap", "token_hash": token_hash(first)}, "system")["created"]
    assert not log.ok({"op": "bootstrap", "token_hash": token_hash(second)}, "system")["created"]
    assert log.state.whoami(token_hash(first), NOW)["admin"]
    with pytest.raises(Exception, match="unknown token"):
        log.state.whoami(token_hash(second), NOW)
    # The leader's own commands never run as a caller.
    code, message = log.err({"op": "bootstrap", "token_hash": token_hash(second)}, first)
    assert code == "INVALID_ARGUMENT" and "auth" in message


def test_users_get_a_private_home_and_only_admins_add_users(log, people):
    home = log.state.stat("/alice")
    assert (home["owner"], home["visibility"]) == ("alice", "private")
    code, message = log.err({"op": "user_add", "name": "eve", "admin": False}, people["alice"])
    assert code == "PERMISSION_DENIED" and "not an administrator" in message
    assert log.err({"op": "user_add", "name": "alice", "admin": False}, people["admin"])[0] == "ALREADY_EXISTS"
    assert log.err({"op": "user_add", "name": "root", "admin": False}, people["admin"])[0] == "INVALID_ARGUMENT"
    assert log.err({"op": "user_add", "name": "Bad Name", "admin": False}, people["admin"])[0] == "INVALID_ARGUMENT"


def test_a_revoked_token_cannot_slip_through_after_its_revocation_in_the_log(log, people):
    alice = people["alice"]
    log.put("/alice/a", 10, alice)
    results = log.batch(
        {"op": "token_revoke", "token": "t", "auth": token_hash(alice)},
        {"op": "mkdir", "path": "/alice/late", "parents": False, "mode": 0o755, "owner": "",
         "auth": token_hash(alice)})
    assert "ok" in results[0]
    assert results[1]["err"][0] == "UNAUTHENTICATED" and "revoked" in results[1]["err"][1]


def test_expired_disabled_and_unknown_tokens_are_unauthenticated(log, people):
    short = log.token("alice", "short", expires=NOW + 1, by=people["admin"])
    assert log.mkdir("/alice/d1", short)["ok"]
    later = log.state.apply_batch(next(log.index), [{
        "op": "mkdir", "path": "/alice/d2", "parents": False, "mode": 0o755, "owner": "",
        "now": NOW + 1, "auth": token_hash(short)}])[0]
    assert later["err"][0] == "UNAUTHENTICATED" and "expired 1970-01-01 00:16 UTC" in later["err"][1]
    log.ok({"op": "user_set", "name": "alice", "disabled": True}, people["admin"])
    code, message = log.mkdir("/alice/d3", people["alice"])["err"]
    assert code == "UNAUTHENTICATED" and "'alice' is disabled" in message
    log.ok({"op": "user_set", "name": "alice", "disabled": False}, people["admin"])
    assert log.mkdir("/alice/d3", people["alice"])["ok"]
    assert "unknown token" in log.mkdir("/alice/d4", new_token())["err"][1]
    # An administrator cannot lock themselves out.
    assert log.err({"op": "user_set", "name": "admin", "disabled": True},
                   people["admin"])[0] == "FAILED_PRECONDITION"


def test_service_accounts_act_for_their_owner_and_die_with_their_tokens(log, people):
    alice = people["alice"]
    log.ok({"op": "account_create", "name": "backup-bot", "owner": ""}, alice)
    bot = log.token("backup-bot", by=alice)
    log.put("/alice/by-bot", 5, bot)
    assert log.state.stat("/alice/by-bot")["owner"] == "alice"
    assert log.state.whoami(token_hash(bot), NOW)["account"] == "backup-bot"
    # bob cannot make tokens for alice's account, nor accounts for alice
    assert log.err({"op": "token_create", "token_hash": token_hash(new_token()), "name": "x",
                    "principal": "backup-bot", "expires": 0, "scopes": ["*"]},
                   people["bob"])[0] == "PERMISSION_DENIED"
    assert log.err({"op": "account_create", "name": "evil", "owner": "alice"},
                   people["bob"])[0] == "PERMISSION_DENIED"
    assert log.ok({"op": "account_delete", "name": "backup-bot"}, alice)["revoked"] == 1
    assert log.mkdir("/alice/x", bot)["err"][0] == "UNAUTHENTICATED"


def test_a_scoped_token_stays_inside_its_scope_and_its_owner(log, people):
    ci = log.token("alice", "ci", ["storage.alice.files@/alice/backups/**:list,read,write"],
                   by=people["alice"])
    log.mkdir("/alice/backups", people["alice"])
    log.put("/alice/backups/db", 3, ci)
    assert log.mkdir("/alice/photos", ci)["err"][0] == "NOT_FOUND"      # /alice is outside it
    code, message = log.err({"op": "delete", "path": "/alice/backups/db", "recursive": False}, ci)
    assert message == "token 'ci' (alice) lacks storage.alice.files:delete on /alice/backups/db"
    # a scoped token cannot mint tokens (it could widen itself)
    assert log.err({"op": "token_create", "token_hash": token_hash(new_token()), "name": "w",
                    "principal": "", "expires": 0, "scopes": ["*"]}, ci)[0] == "PERMISSION_DENIED"
    # a scope naming someone else's files gives nothing beyond its owner's rights
    sneaky = log.token("bob", "sneaky", ["storage.alice.files:*"], by=people["bob"])
    assert log.mkdir("/alice/sneaky", sneaky)["err"][0] == "NOT_FOUND"


def test_visibility_private_visible_public(log, people):
    alice, bob = people["alice"], people["bob"]
    log.mkdir("/alice/share", alice)
    log.put("/alice/share/doc", 4, alice)

    def seen(token, for_read=False):
        try:
            log.state.stat("/alice/share/doc", None if token is None else token_hash(token),
                           NOW, for_read)
            return "ok"
        except Exception as exc:       # GfsError
            return exc.code

    assert (seen(bob), seen(None)) == ("NOT_FOUND", "NOT_FOUND")
    assert [e["path"] for e in log.state.list("/", auth=token_hash(bob), now=NOW)[0]] == ["/bob"]
    log.ok({"op": "set_visibility", "path": "/alice/share", "visibility": "visible"}, alice)
    assert (seen(bob), seen(bob, True), seen(None)) == ("ok", "PERMISSION_DENIED", "NOT_FOUND")
    log.ok({"op": "set_visibility", "path": "/alice/share", "visibility": "public"}, alice)
    assert (seen(bob, True), seen(None, True)) == ("ok", "ok")
    assert log.err({"op": "delete", "path": "/alice/share/doc", "recursive": False},
                   bob)[0] == "PERMISSION_DENIED"
    assert log.err({"op": "set_visibility", "path": "/alice/share", "visibility": "private"},
                   bob)[0] == "PERMISSION_DENIED"
    # A file deeper down can be made private again.
    log.ok({"op": "set_visibility", "path": "/alice/share/doc", "visibility": "private"}, alice)
    assert seen(bob) == "NOT_FOUND"
    # Anonymous writes nothing, not even in public directories.
    assert log.mkdir("/alice/share/anon")["err"][0] == "PERMISSION_DENIED"


def test_administrators_may_do_everything_and_it_is_audited(log, people):
    log.put("/alice/private", 2, people["alice"])
    log.ok({"op": "delete", "path": "/alice/private", "recursive": False}, people["admin"])
    log.err({"op": "delete", "path": "/alice", "recursive": True}, people["bob"])
    records = log.state.audit_log(token_hash(people["admin"]), NOW, 100)
    assert {"who": "token 't' (bob)", "op": "delete", "target": "/alice",
            "result": "NOT_FOUND: /alice: no such file or directory"} not in records   # hidden: not a refusal of rights
    admin_rows = [r for r in records if r["op"] == "delete" and r["who"] == "token 'root' (admin)"
                  or r["result"] == "ok (administrator's rights)"]
    assert any(r["target"] == "/alice/private" for r in admin_rows)
    ops = [r["op"] for r in records]
    assert ops[:1] == ["bootstrap"] and ops.count("user_add") == 2 and ops.count("token_create") == 2
    denied = log.err({"op": "user_add", "name": "x", "admin": False}, people["bob"])
    assert denied[0] == "PERMISSION_DENIED"
    last = log.state.audit_log(token_hash(people["admin"]), NOW, 1)[0]
    assert (last["who"], last["op"], last["result"].split(":")[0]) == \
        ("token 't' (bob)", "user_add", "PERMISSION_DENIED")
    with pytest.raises(Exception, match="not an administrator"):
        log.state.audit_log(token_hash(people["bob"]), NOW, 10)


def test_quotas_refuse_before_the_bytes_are_sent_and_at_commit(log, people):
    alice = people["alice"]
    log.ok({"op": "user_set", "name": "alice", "quota": [100, 3]}, people["admin"])
    code, message = log.err({"op": "create", "path": "/alice/big", "replication": 1,
                             "storage_class": "", "chunk_size": 1 << 20, "mode": 0o644,
                             "owner": "", "overwrite": False, "size": 101}, alice)
    assert code == "RESOURCE_EXHAUSTED" and "quota exceeded" in message
    log.put("/alice/a", 60, alice)
    # announced small, committed big: refused at commit
    ino = log.ok({"op": "create", "path": "/alice/b", "replication": 1, "storage_class": "",
                  "chunk_size": 1 << 20, "mode": 0o644, "owner": "", "overwrite": False,
                  "size": 1}, alice)["inode"]
    handle = log.ok({"op": "add_chunk", "inode": ino, "index": 0, "replicas": ["a"]}, alice)["handle"]
    assert log.err({"op": "commit", "inode": ino, "size": 50,
                    "chunks": [{"handle": handle, "length": 50, "checksum": 1}]},
                   alice)[0] == "RESOURCE_EXHAUSTED"
    # overwriting replaces: 60 -> 90 bytes fits
    log.put("/alice/a", 90, alice, overwrite=True)
    log.put("/alice/c", 1, alice)
    log.put("/alice/d", 1, alice)
    assert log.err({"op": "create", "path": "/alice/e", "replication": 1, "storage_class": "",
                    "chunk_size": 1 << 20, "mode": 0o644, "owner": "", "overwrite": False,
                    "size": 0}, alice)[1].endswith("the quota is 3")
    me = log.state.whoami(token_hash(alice), NOW)
    assert (me["used"], me["quota"]) == ([92, 3], [100, 3])


def test_directory_totals_and_usage_follow_every_change(log, people):
    alice = people["alice"]
    log.mkdir("/alice/a/b", alice, parents=True)
    log.put("/alice/a/b/f1", 10, alice)
    log.put("/alice/a/f2", 5, alice)
    du = lambda p: (log.state.du(p)["bytes"], log.state.du(p)["files"])   # noqa: E731
    assert (du("/alice"), du("/alice/a/b"), du("/")) == ((15, 2), (10, 1), (15, 2))
    log.ok({"op": "mkdir", "path": "/alice/c", "parents": False, "mode": 0o755, "owner": ""}, alice)
    log.ok({"op": "rename", "src": "/alice/a/b", "dst": "/alice/c/b", "overwrite": False}, alice)
    assert (du("/alice/a"), du("/alice/c")) == ((5, 1), (10, 1))
    log.ok({"op": "delete", "path": "/alice/c", "recursive": True, "trash": True}, alice)
    assert du("/alice") == (5, 1)
    assert log.state.whoami(token_hash(alice), NOW)["used"] == [15, 2]     # the trash still counts
    log.ok({"op": "trash_purge", "user": "", "all_users": False, "ids": [], "before": 0}, alice)
    assert log.state.whoami(token_hash(alice), NOW)["used"] == [5, 1]
    log.put("/alice/a/f2", 7, alice, overwrite=True)
    assert du("/alice") == (7, 1) and log.state.whoami(token_hash(alice), NOW)["used"] == [7, 1]
    log.ok({"op": "chown", "path": "/alice/a", "owner": "bob", "recursive": True}, people["admin"])
    assert log.state.whoami(token_hash(people["bob"]), NOW)["used"] == [7, 1]


def test_a_store_from_before_identity_gets_its_totals_rebuilt(tmp_path):
    path = str(tmp_path / "meta")
    with MetadataState(path, map_size=1 << 26) as state:
        log = Log(state)
        log.ok({"op": "mkdir", "path": "/d/e", "parents": True, "mode": 0o755, "owner": "u"}, "system")
        log.put("/d/e/f", 9, "system")
        log.put("/d/g", 4, "system")
        expected = state.dump()
        with state._env.begin(write=True) as txn:           # what older code wrote
            tx = Tx(txn, state._dbs)
            tx.set_counter(b"layout", 0)
            for key, record in list(tx.records("inodes")):
                record.pop("du", None)
                record.pop("parent", None)
                tx.put("inodes", key, record)
            for key, _ in list(tx.raw_items("usage")):
                tx.delete("usage", key)
    with MetadataState(path, map_size=1 << 26) as state:
        assert state.dump() == expected
        assert state.du("/d")["bytes"] == 13


def test_identity_commands_apply_byte_identically_on_two_replicas(tmp_path, people, log):
    tokens = []

    def workload(state):
        replica = Log(state)
        results = [replica.ok({"op": "bootstrap", "token_hash": token_hash(people["admin"])}, "system")]
        for name in ("carol", "dave"):
            results.append(replica.run({"op": "user_add", "name": name, "admin": False},
                                       people["admin"]))
        for token in tokens:
            results.append(replica.run({"op": "token_create", "token_hash": token_hash(token),
                                        "name": "x", "principal": "carol", "expires": 0,
                                        "scopes": ["storage.carol.files:read"]}, people["admin"]))
        results.append(replica.run({"op": "token_revoke", "token": "x"}, people["admin"]))
        results.append(replica.run({"op": "user_add", "name": "eve", "admin": False}, tokens[0]))
        return results, state.dump()

    tokens.extend(new_token() for _ in range(2))
    outcomes = []
    for name in ("one", "two"):
        with MetadataState(str(tmp_path / name), map_size=1 << 26) as state:
            outcomes.append(workload(state))
    assert outcomes[0] == outcomes[1]
    assert all(outcomes[0][1][db] for db in ("users", "tokens", "audit"))


def test_token_use_is_noted_in_batches_by_the_leader(log, people):
    hashed = token_hash(people["alice"])
    log.ok({"op": "note_token_use", "uses": [[hashed, NOW + 5], [token_hash(new_token()), 1]]},
           "system")
    log.ok({"op": "note_token_use", "uses": [[hashed, NOW + 1]]}, "system")   # never backwards
    mine = log.state.tokens(hashed, NOW)
    assert [(t["name"], t["last_used"]) for t in mine] == [("t", NOW + 5)]
    assert log.err({"op": "note_token_use", "uses": [[hashed, NOW + 9]]},
                   people["alice"])[0] == "INVALID_ARGUMENT"


@pytest.mark.parametrize("command", [
    {"op": "user_set", "name": "", "disabled": True},
    {"op": "account_delete", "name": ""},
    {"op": "user_set", "name": "x" * 255, "disabled": True},
])
def test_names_that_cannot_be_keys_are_refused_not_wedging_the_log(log, people, command):
    """A name LMDB cannot hold as a key (empty) is no user: the command fails, the entry is
    applied, and the next one too (an exception here would fail the entry for ever)."""
    code, _ = log.err(command, people["admin"])
    assert code in ("NOT_FOUND", "INVALID_ARGUMENT")
    log.ok({"op": "user_add", "name": "carol", "admin": False}, people["admin"])


def test_set_attr_changes_mode_and_mtime_for_whoever_may_write(log, people):
    log.put("/alice/f", 10, people["alice"])
    assert log.ok({"op": "set_attr", "path": "/alice/f", "mode": 0o600},
                  people["alice"]) == {"mode": 0o600, "mtime_ms": NOW}
    assert log.ok({"op": "set_attr", "path": "/alice/f", "mtime_ms": 1234},
                  people["alice"]) == {"mode": 0o600, "mtime_ms": 1234}
    assert log.state.stat("/alice/f")["mtime"] == 1234
    assert log.err({"op": "set_attr", "path": "/alice/f", "mode": 0o777},
                   people["bob"])[0] == "NOT_FOUND"                 # private: hidden
    assert log.err({"op": "set_attr", "path": "/alice/f", "mode": 0o10000},
                   people["alice"])[0] == "INVALID_ARGUMENT"
    assert log.err({"op": "set_attr", "path": "/alice/nope"}, people["alice"])[0] == "NOT_FOUND"


def test_an_admin_service_acts_for_a_token_and_only_an_admin_may(log, people):
    """The S3 gateway's delegation (master/callers.py): auth = service hash + delegate hash."""
    admin, alice, bob = people["admin"], people["alice"], people["bob"]
    as_alice = token_hash(admin) + token_hash(alice)
    result = log.batch({"op": "mkdir", "path": "/alice/via-gw", "parents": False, "mode": 0o755,
                        "owner": "", "auth": as_alice})[0]
    assert "ok" in result and log.state.stat("/alice/via-gw")["owner"] == "alice"
    # acting for alice gives alice's rights, not the administrator's
    denied = log.batch({"op": "mkdir", "path": "/bob/x", "parents": False, "mode": 0o755,
                        "owner": "", "auth": as_alice})[0]
    assert denied["err"][0] == "NOT_FOUND"
    # anonymous delegate: nothing private
    anon = log.batch({"op": "mkdir", "path": "/alice/anon", "parents": False, "mode": 0o755,
                      "owner": "", "auth": token_hash(admin) + bytes(32)})[0]
    assert anon["err"][0] in ("NOT_FOUND", "UNAUTHENTICATED", "PERMISSION_DENIED")
    # a non-administrator cannot act for anyone
    sneaky = log.batch({"op": "mkdir", "path": "/alice/sneaky", "parents": False, "mode": 0o755,
                        "owner": "", "auth": token_hash(bob) + token_hash(alice)})[0]
    assert sneaky["err"][0] == "PERMISSION_DENIED" and "act for" in sneaky["err"][1]
    # a revoked delegate is refused at its position in the log
    log.ok({"op": "token_revoke", "token": "t", "auth": None}, alice)
    late = log.batch({"op": "mkdir", "path": "/alice/late", "parents": False, "mode": 0o755,
                      "owner": "", "auth": as_alice})[0]
    assert late["err"][0] == "UNAUTHENTICATED" and "revoked" in late["err"][1]


def test_commit_stores_extended_attributes_within_a_bound(log, people):
    alice = people["alice"]
    ino = log.ok({"op": "create", "path": "/alice/x", "replication": 1, "storage_class": "",
                  "chunk_size": 1 << 20, "mode": 0o644, "owner": "", "overwrite": False,
                  "size": 0}, alice)["inode"]
    too_big = log.run({"op": "commit", "inode": ino, "size": 0, "chunks": [],
                       "xattrs": {"k": "v" * 9000}}, alice)
    assert too_big["err"][0] == "INVALID_ARGUMENT"
    log.ok({"op": "commit", "inode": ino, "size": 0, "chunks": [],
            "xattrs": {"s3.etag": "abc", "s3.meta.who": "me"}}, alice)
    assert log.state.stat("/alice/x")["xattrs"] == {"s3.etag": "abc", "s3.meta.who": "me"}
