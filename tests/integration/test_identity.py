"""Identity and access end to end, with real daemons: the decision matrix of actors × operations ×
visibility through raw gRPC (bypassing the client) and through the real CLI, token lifecycle,
quotas, du and the audit log."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import time

import grpc
import pytest

from gfs.auth.tokens import bearer, new_token
from gfs.callstream import BlockingCallStream
from gfs.errors import GfsError
from proto import identity_pb2 as ipb
from proto import identity_pb2_grpc as ipb_grpc
from proto import master_pb2 as pb
from proto import master_pb2_grpc as pb_grpc

OPTS = {"master": {"election-timeout": 0.3, "replication": 1, "chunk-size": "1MiB"},
        "chunkserver": {"heartbeat-interval": 0.3}}
VIS = ("private", "visible", "public")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One cluster; alice owns /alice/{private,visible,public}/f; tokens for every actor."""
    from cli.localcluster import LocalCluster
    cluster = LocalCluster(tmp_path_factory.mktemp("identity") / "cluster")
    cluster.create(masters=1, chunkservers=1, options=OPTS)
    try:
        cluster.up(timeout=60)
        with cluster.client() as admin:
            for name in ("alice", "bob", "carol"):
                admin.user_add(name)
            tokens = {"owner": admin.token_create("laptop", principal="alice")[0],
                      "admin": cluster.admin_token,
                      "bob": admin.token_create("laptop", principal="bob")[0],
                      "anon": "",
                      "narrow": admin.token_create("pub", principal="alice", scopes=[
                          "storage.alice.files@/alice/public/**:read,list"])[0],
                      "expired": admin.token_create("brief", principal="alice", ttl_s=1)[0],
                      "revoked": admin.token_create("old", principal="alice")[0],
                      "disabled": admin.token_create("laptop", principal="carol")[0],
                      "garbage": "gfs_" + "x" * 49}
            admin.token_revoke("old")
            admin.user_set("carol", disabled=True)
        with cluster.client(token=tokens["owner"]) as alice:
            for v in VIS:
                alice.mkdir(f"/alice/{v}")
                alice.set_visibility(f"/alice/{v}", v)
                alice.put(io.BytesIO(b"secret " + v.encode()), f"/alice/{v}/f")
        time.sleep(1.0)                          # the "expired" token has expired
        yield cluster, tokens
    finally:
        cluster.down()


def code_of(call) -> str:
    try:
        call()
        return "o"
    except grpc.RpcError as err:
        return {grpc.StatusCode.NOT_FOUND: "n", grpc.StatusCode.PERMISSION_DENIED: "d",
                grpc.StatusCode.UNAUTHENTICATED: "u"}.get(err.code(), err.code().name)


def header() -> pb.RequestHeader:
    import os
    return pb.RequestHeader(client_id=os.urandom(16), seq=1)


# (actor, operation) -> outcome for private, visible, public:
# o ok, n NOT_FOUND (must not even know it exists), d PERMISSION_DENIED, u UNAUTHENTICATED
READ_LIKE = {"owner": "ooo", "admin": "ooo", "bob": "noo", "anon": "nno", "narrow": "noo"}
GET = {"owner": "ooo", "admin": "ooo", "bob": "ndo", "anon": "nno", "narrow": "ndo"}
WRITE_LIKE = {"owner": "ooo", "admin": "ooo", "bob": "ndd", "anon": "nnd", "narrow": "ndd"}
EXPECTED = {"stat": READ_LIKE, "ls": READ_LIKE, "get": GET, "put": WRITE_LIKE, "mv": WRITE_LIKE,
            "rm": WRITE_LIKE, "visibility": WRITE_LIKE}
BAD = ("expired", "revoked", "disabled", "garbage")
ACTORS = list(READ_LIKE) + list(BAD)


def expected(op: str, actor: str) -> str:
    return "uuu" if actor in BAD else EXPECTED[op][actor]


def grpc_ops(stub, istub, d: str, actor: str, auth) -> dict:
    def mv():
        stub.Rename(pb.RenameRequest(header=header(), src=f"{d}/f", dst=f"{d}/moved"),
                    timeout=10, metadata=auth)
        stub.Rename(pb.RenameRequest(header=header(), src=f"{d}/moved", dst=f"{d}/f"),
                    timeout=10, metadata=auth)

    return {
        "stat": lambda: stub.Stat(pb.StatRequest(path=f"{d}/f"), timeout=10, metadata=auth),
        "ls": lambda: stub.List(pb.ListRequest(path=d), timeout=10, metadata=auth),
        "get": lambda: stub.Stat(pb.StatRequest(path=f"{d}/f", for_read=True), timeout=10,
                                 metadata=auth),
        "put": lambda: stub.Create(pb.CreateRequest(header=header(), path=f"{d}/new-{actor}"),
                                   timeout=10, metadata=auth),
        "mv": mv,
        "visibility": lambda: istub.SetVisibility(ipb.VisibilityRequest(
            header=header(), path=d, visibility=d.rsplit("/", 1)[1]), timeout=10, metadata=auth),
    }


def decision_matrix(stub, istub, tokens: dict, ops: tuple[str, ...]) -> tuple[dict, dict]:
    """(got, want): each actor's outcome of each of `ops` on private, visible and public, and
    of an administrators-only call, through `stub` (the Master's calls) and `istub`."""
    got, want = {}, {}
    for actor in ACTORS:
        auth = bearer(tokens[actor])
        for op in ops:
            got[actor, op] = "".join(code_of(grpc_ops(stub, istub, f"/alice/{v}", actor,
                                                      auth)[op]) for v in VIS)
            want[actor, op] = expected(op, actor)
        got[actor, "admin"] = code_of(lambda: stub.Health(pb.Empty(), timeout=10,
                                                          metadata=auth))
        want[actor, "admin"] = {"admin": "o", "owner": "d", "bob": "d", "anon": "d",
                                "narrow": "d"}.get(actor, "u")
    return got, want


def test_decision_matrix_over_raw_grpc(world):
    cluster, tokens = world
    with grpc.insecure_channel(cluster.master_addresses()[0]) as ch:
        got, want = decision_matrix(pb_grpc.MasterStub(ch), ipb_grpc.IdentityStub(ch), tokens,
                                    ("stat", "ls", "get", "put", "mv", "visibility"))
    assert got == want


class StreamedStub:
    """The Master stub's calls, every one as a message of one `Calls` stream
    (gfs/callstream.py)."""

    def __init__(self, stream: BlockingCallStream):
        self._stream = stream

    def __getattr__(self, method: str):
        return lambda request, timeout, metadata: self._stream.call(
            method, request, timeout=timeout, metadata=metadata)


def test_decision_matrix_with_every_actor_on_one_call_stream(world):
    """Each message of a stream is its own caller's: the same outcomes as calls of their own
    with every actor's calls, good tokens and bad, sent over one stream in turn (twice)."""
    cluster, tokens = world
    with grpc.insecure_channel(cluster.master_addresses()[0]) as ch:
        stream = BlockingCallStream(ch, "master")
        stub = StreamedStub(stream)
        for _ in range(2):
            got, want = decision_matrix(stub, ipb_grpc.IdentityStub(ch), tokens,
                                        ("stat", "ls", "get", "put", "mv"))
            assert got == want
        assert not stream.unsupported
        stream.close()


def gfs(cluster, token: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True,
                          text=True, env=cluster.cli_env(token), timeout=60, input=stdin)


@pytest.mark.timeout(900)          # ~25 CLI processes: slow only on a loaded machine
def test_decision_matrix_through_the_cli_and_its_error_lines(world, tmp_path):
    """The visible column through `gfs` for reading, writing and listing (the raw gRPC matrix
    covers every cell; this checks the CLI's exit codes and one-line errors)."""
    cluster, tokens = world
    commands = {"ls": ("ls", "/alice/visible"),
                "get": ("get", "/alice/visible/f", str(tmp_path / "out")),
                "put": ("put", "-", "/alice/visible/cli-{actor}")}
    for actor in ("owner", "bob", "anon", "narrow", "revoked", "disabled", "garbage"):
        for op, argv in commands.items():
            proc = gfs(cluster, tokens[actor], *(a.format(actor=actor) for a in argv),
                       stdin="data")
            outcome = "o" if proc.returncode == 0 else {
                "not found": "n", "permission denied": "d", "unauthenticated": "u"}.get(
                proc.stderr.split(":")[1].strip() if proc.stderr.startswith("gfs:") else "", "?")
            assert outcome == expected(op, actor)[1], (actor, op, proc.stderr)
            assert "Traceback" not in proc.stderr and proc.stderr.count("\n") <= 1
    with cluster.client() as admin:
        admin.put(io.BytesIO(b"x"), "/alice/visible/rm-me")
    assert gfs(cluster, tokens["bob"], "rm", "/alice/visible/rm-me").returncode == 1
    assert gfs(cluster, tokens["owner"], "rm", "/alice/visible/rm-me").returncode == 0
    bob = gfs(cluster, tokens["bob"], "get", "/alice/visible/f", "-")
    assert bob.stderr.strip() == ("gfs: permission denied: token 'laptop' (bob) lacks "
                                  "storage.alice.files:read on /alice/visible/f")
    expired = gfs(cluster, tokens["expired"], "ls", "/alice")
    assert expired.stderr.startswith("gfs: unauthenticated: token 'brief' expired ")
    assert "UTC" in expired.stderr
    garbage = gfs(cluster, tokens["garbage"], "ls", "/")
    assert "malformed token" in garbage.stderr


def test_anonymous_sees_only_public_and_listing_hides_names(world):
    cluster, tokens = world
    with cluster.client(token="") as anon:
        assert [e.path for e in anon.list("/")] == []
        assert anon.read("/alice/public/f") == b"secret public"
        assert anon.whoami()["user"] == ""
    with cluster.client(token=tokens["bob"]) as bob:
        assert [e.path for e in bob.list("/")] == ["/bob"]
        with pytest.raises(GfsError) as err:          # alice's home is private...
            list(bob.list("/alice"))
        assert err.value.code == "NOT_FOUND"
        assert "/alice/visible/f" in [e.path for e in bob.list("/alice/visible")]  # ...not all in it


def test_trash_entries_are_their_owners(world):
    cluster, tokens = world
    with cluster.client(token=tokens["owner"]) as alice, \
            cluster.client(token=tokens["bob"]) as bob:
        alice.put(io.BytesIO(b"t"), "/alice/private/t")
        entry = alice.delete("/alice/private/t")
        with pytest.raises(GfsError) as err:
            bob.trash_restore(entry)
        assert err.value.code == "NOT_FOUND"
        assert bob.trash_list() == []
        assert alice.trash_restore(entry) == "/alice/private/t"


def test_tokens_scopes_service_accounts_and_revocation(world):
    cluster, tokens = world
    with cluster.client(token=tokens["owner"]) as alice:
        alice.account_create("backup-bot")
        bot_token, info = alice.token_create("nightly", principal="backup-bot", scopes=[
            "storage.alice.files@/alice/backups/**:list,read,write"], ttl_s=3600)
        assert info["principal"] == "backup-bot" and info["expires_ms"] > 0
        alice.mkdir("/alice/backups")
        with cluster.client(token=bot_token) as bot:
            bot.put(io.BytesIO(b"db"), "/alice/backups/db")
            assert bot.stat("/alice/backups/db").owner == "alice"
            with pytest.raises(GfsError) as err:
                bot.put(io.BytesIO(b"x"), "/alice/elsewhere")
            assert err.value.code == "NOT_FOUND"
            assert [t["name"] for t in alice.tokens()].count("nightly") == 1
            assert alice.token_revoke("nightly") == [info["id"]]
            with pytest.raises(GfsError) as err:
                bot.stat("/alice/backups/db")
            assert err.value.code == "UNAUTHENTICATED" and "revoked" in err.value.message


def test_quota_du_and_whoami(world):
    cluster, tokens = world
    with cluster.client() as admin:
        admin.user_add("dave")
        token = admin.token_create("t", principal="dave")[0]
        admin.user_set("dave", quota=(1000, 10))
    with cluster.client(token=token) as dave:
        dave.put(io.BytesIO(b"a" * 600), "/dave/a")
        with pytest.raises(GfsError) as err:
            dave.put(io.BytesIO(b"b" * 600), "/dave/b")
        assert err.value.code == "RESOURCE_EXHAUSTED" and "quota exceeded" in err.value.message
        assert not dave.exists("/dave/b")
        me = dave.whoami()
        assert (me["used_bytes"], me["used_files"], me["quota_bytes"]) == (600, 1, 1000)
        assert dave.du("/dave")["bytes"] == 600
    out = gfs(cluster, token, "du", "--json", "/dave")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["files"] == 1
    out = gfs(cluster, token, "whoami")
    assert "user:       dave" in out.stdout and "600 B of 1000 B" in out.stdout


def test_cli_token_lifecycle_and_audit(world):
    cluster, tokens = world
    made = gfs(cluster, tokens["owner"], "token", "create", "--name", "cli-made", "--ttl", "1d",
               "--scope", "storage.alice.files:read,list")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("gfs_") and "shown once" in made.stderr
    listed = json.loads(gfs(cluster, tokens["owner"], "token", "ls", "--json").stdout)
    assert {"cli-made", "laptop"} <= {t["name"] for t in listed}
    assert gfs(cluster, secret, "ls", "/alice/private").returncode == 0
    denied = gfs(cluster, secret, "mkdir", "/alice/private/nope")
    assert denied.returncode == 1 and "lacks storage.alice.files:write" in denied.stderr
    assert gfs(cluster, tokens["owner"], "token", "revoke", "cli-made").returncode == 0
    assert "revoked" in gfs(cluster, secret, "ls", "/alice").stderr
    audit = json.loads(gfs(cluster, tokens["admin"], "admin", "audit", "--json", "-n", "500").stdout)
    assert any(r["op"] == "mkdir" and r["result"].startswith("PERMISSION_DENIED") for r in audit)
    assert any(r["op"] == "token_revoke" for r in audit)
    assert gfs(cluster, tokens["owner"], "admin", "audit").returncode == 1


def test_login_logout_remember_a_token(world, tmp_path):
    cluster, tokens = world
    env = {**cluster.cli_env(""), "GFS_CONFIG_DIR": str(tmp_path / "cfg")}
    env.pop("GFS_TOKEN")
    run = lambda *a, stdin=None: subprocess.run(   # noqa: E731
        [sys.executable, "-m", "cli.main", *a], input=stdin, capture_output=True, text=True,
        env=env, timeout=60)
    bad = run("login", stdin="gfs_nonsense\n")
    assert bad.returncode == 1 and "malformed token" in bad.stderr
    assert run("login", stdin=tokens["bob"] + "\n").returncode == 0
    saved = tmp_path / "cfg" / "token"
    assert oct(saved.stat().st_mode & 0o777) == "0o600"
    assert "user:       bob" in run("whoami").stdout
    assert run("logout").returncode == 0
    assert "anonymous" in run("whoami").stdout
    unknown = run("--token", new_token(), "ls", "/")
    assert "unknown token" in unknown.stderr
