"""Three real master processes over real sockets: failover, kill -9 of everyone, snapshots,
linearizable reads, and the CLI on top."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from gfs.auth.tokens import bearer
from gfs.client import Client
from gfs.errors import GfsError
from proto import master_pb2 as pb
from proto import master_pb2_grpc as pb_grpc
from tests.integration.leader_checks import paused_leader_serves_no_stale_read
from tests.integration.one_master import paths_on

FAST = {"master": {"election-timeout": 0.3}}


class Writer:
    """Concurrent clients creating directories; remembers every acknowledged one."""

    def __init__(self, masters, threads=4, deadline=20.0, prefix="/w", token=""):
        self.masters = masters
        self.token = token
        self.acked: list[str] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(f"{prefix}{i}", deadline))
                         for i in range(threads)]

    def _run(self, prefix, deadline):
        with Client(self.masters, deadline=deadline, attempt_timeout=1.0, token=self.token) as c:
            n = 0
            while not self._stop.is_set():
                path = f"{prefix}-{n}"
                n += 1
                try:
                    c.mkdir(path)
                except GfsError as err:
                    with self._lock:
                        self.errors.append(f"{path}: {err.code} {err}")
                    continue
                with self._lock:
                    self.acked.append(path)

    def start(self):
        for t in self._threads:
            t.start()
        return self

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)


def all_names(client, path="/"):
    return {e.path for e in client.list(path)}


def test_writes_survive_killing_the_leader(make_cluster):
    c = make_cluster(options=FAST)
    w = Writer(c.master_addresses(), token=c.admin_token).start()
    time.sleep(1.0)
    old = c.leader()
    c.kill(old)
    time.sleep(2.0)
    w.stop()
    assert len(w.acked) > 50
    with c.client() as client:
        names = all_names(client)
        assert set(w.acked) <= names
    c.start(old)
    c.wait_healthy()


@pytest.mark.parametrize("compact", [1_000_000, 40])
def test_kill_all_masters_at_once_loses_nothing_acknowledged(make_cluster, compact):
    """All three masters get SIGKILL at the same moment, under load, many times over."""
    rounds = int(os.environ.get("GFS_KILLALL_ROUNDS", "6"))
    opts = {"master": {"election-timeout": 0.3, "compact-entries": compact}}
    c = make_cluster(options=opts)
    acked: list[str] = []
    rng = random.Random(1234 + compact)
    for r in range(rounds):
        w = Writer(c.master_addresses(), threads=6, prefix=f"/r{r}-", token=c.admin_token).start()
        time.sleep(rng.uniform(0.3, 1.2))
        pids = [c.pid(d["name"]) for d in c.daemons()]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        for d in c.daemons():
            c._wait_gone(d["name"], 10)
        c.up()
        w.stop()        # in-flight requests retry against the restarted masters, same seq
        acked += w.acked
        with c.client(deadline=30) as client:
            names = all_names(client)
        missing = [p for p in acked if p not in names]
        assert not missing, f"round {r}: {len(missing)} acknowledged mkdirs lost: {missing[:5]}"
    assert len(acked) > rounds * 10


def test_lagging_follower_catches_up_from_a_snapshot(make_cluster):
    c = make_cluster(options={"master": {"election-timeout": 0.3, "compact-entries": 30}})
    leader = c.leader()
    follower = next(d["name"] for d in c.daemons() if d["name"] != leader)
    c.kill(follower)
    with c.client() as client:
        for i in range(150):
            client.mkdir(f"/snap-{i}")
        statuses = {s["address"]: s for s in client.master_statuses() if "error" not in s}
        assert any(s["snapshot_index"] > 0 for s in statuses.values())
    c.start(follower)
    addr = c.daemon(follower)["grpc"]
    deadline = time.monotonic() + 20
    auth = bearer(c.admin_token)
    with grpc.insecure_channel(addr) as ch:
        stub = pb_grpc.MasterStub(ch)
        while True:
            try:
                stub.Stat(pb.StatRequest(path="/snap-149", stale_ok=True), timeout=1, metadata=auth)
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline, "follower never caught up"
                time.sleep(0.2)
        entries = stub.List(pb.ListRequest(path="/", stale_ok=True, limit=10000), timeout=2,
                           metadata=auth).entries
    assert {f"/snap-{i}" for i in range(150)} <= {e.path for e in entries}
    # the store image was written into place while it arrived (master/snapshot_receiver.py)
    log_text = (Path(c.daemon(follower)["data"]) / "daemon.log").read_text()
    assert "installed snapshot from leader" in log_text
    assert "not received in place" not in log_text


SNAP_DIRS = {f"/snap-{i}" for i in range(150)}


def lagging_behind_snapshots(make_cluster, election_timeout: float):
    """Three masters compacting every 30 entries, one of them (a follower) killed while the
    others took SNAP_DIRS: (cluster, the lagging one, {up-to-date one: its snapshot file})."""
    c = make_cluster(options={"master": {"election-timeout": election_timeout,
                                         "compact-entries": 30}})
    lagging = next(d["name"] for d in c.daemons() if d["name"] != c.leader())
    c.kill(lagging)
    with c.client() as client:
        for path in sorted(SNAP_DIRS):
            client.mkdir(path)
    return c, lagging, {d["name"]: Path(d["data"]) / "raft" / "snapshot.bin"
                        for d in c.daemons() if d["name"] != lagging}


def wait_caught_up(c, lagging: str, within: float) -> None:
    """Until master `lagging` holds SNAP_DIRS (at most `within` seconds); then it must list the
    same as the leader."""
    started = time.monotonic()
    while not SNAP_DIRS <= paths_on(c, lagging):
        assert time.monotonic() - started < within, "the lagging follower never caught up"
        time.sleep(0.3)
    with c.client() as client:
        assert paths_on(c, lagging) == all_names(client)


def test_a_lagging_follower_catches_up_after_the_leaders_snapshot_was_cut_off(make_cluster):
    """A power loss under older code left the snapshot file of every up-to-date master cut off
    (pysyncobj renamed it into place before its data reached the disk). Such a file, sent to a
    lagging follower, is refused there at every try — and while it is being sent, no compaction
    replaces it. At start each master moves its damaged file aside and writes a fresh one."""
    c, lagging, files = lagging_behind_snapshots(make_cluster, 0.3)
    others, snapshots = list(files), list(files.values())
    for name in others:
        c.stop(name)
    for snapshot in snapshots:
        data = snapshot.read_bytes()
        snapshot.write_bytes(data[:len(data) // 2])
    for name in others + [lagging]:
        c.start(name)
    wait_caught_up(c, lagging, 40)
    for name, snapshot in zip(others, snapshots):
        assert list(snapshot.parent.glob("snapshot.bin.bad-*")), name     # kept, not deleted
        assert "SNAPSHOT DAMAGED" in (Path(c.daemon(name)["data"]) / "daemon.log").read_text()
    log_text = (Path(c.daemon(lagging)["data"]) / "daemon.log").read_text()
    assert "installed snapshot from leader" in log_text
    # ... the first time: no install was refused on the way
    assert "failed to load full dump" not in log_text and "SNAPSHOT DAMAGED" not in log_text


def settled_snapshot(path: Path) -> int:
    """Wait until master's snapshot file at `path` is whole and no compaction is writing the
    next one; its index."""
    from master.snapshot_format import check_file
    deadline = time.monotonic() + 20
    seen = None
    while True:
        assert time.monotonic() < deadline, f"{path} never settled"
        if path.exists() and not path.with_name(path.name + ".tmp").exists():
            index = check_file(str(path)).last_entry[1]
            if index == seen:
                return index
            seen = index
        time.sleep(0.5)


def damage_image_in_place(path: Path) -> bytes:
    """Flip 16 bytes in the middle of a snapshot file's store image as it lies (same file, same
    length: bit rot under a running master); the damaged bytes."""
    from master.snapshot_format import read_header
    offset = read_header(str(path)).offset
    data = bytearray(path.read_bytes())
    at = offset + (len(data) - offset) // 2
    data[at:at + 16] = bytes(b ^ 0xFF for b in data[at:at + 16])
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(data[at:at + 16])
    return bytes(data)


def test_a_lagging_follower_catches_up_though_the_running_leaders_snapshot_was_damaged(
        make_cluster):
    """Bit rot in the snapshot file of a running leader: it was sent to every follower that
    needed a snapshot, refused by each, and — since a snapshot being sent holds compaction
    back — never replaced until the leader restarted. Now the leader checks the file as the
    pieces go out, stops before the last one, moves the file aside and writes a fresh one,
    without a restart. (Both up-to-date masters' files are damaged, so whichever leads sends a
    damaged one.)"""
    c, lagging, snapshots = lagging_behind_snapshots(make_cluster, 0.5)
    others = list(snapshots)
    for path in snapshots.values():
        settled_snapshot(path)
    damaged = {name: damage_image_in_place(path) for name, path in snapshots.items()}
    pids = {name: c.pid(name) for name in others}
    c.start(lagging)
    wait_caught_up(c, lagging, 30)
    assert {name: c.pid(name) for name in others} == pids          # no master restarted
    found = [name for name in others
             if "SNAPSHOT DAMAGED" in (Path(c.daemon(name)["data"]) / "daemon.log").read_text()]
    assert found, "no leader found its snapshot damaged"
    for name in found:
        [aside] = snapshots[name].parent.glob("snapshot.bin.bad-*")      # kept, not deleted
        assert aside.read_bytes() == damaged[name]
        settled_snapshot(snapshots[name])                           # a fresh, whole one
    log_text = (Path(c.daemon(lagging)["data"]) / "daemon.log").read_text()
    assert "installed snapshot from leader" in log_text
    # the damaged file never reached the follower whole: it had nothing to refuse
    assert "failed to load full dump" not in log_text and "SNAPSHOT DAMAGED" not in log_text


def test_deposed_leader_never_serves_a_stale_read(make_cluster):
    # The old leader wakes up believing it still leads. A linearizable read it answers must
    # include the write made meanwhile; otherwise it must refuse.
    paused_leader_serves_no_stale_read(make_cluster(options=FAST))


def test_retry_with_same_request_id_is_exactly_once(make_cluster):
    c = make_cluster(options=FAST)
    with c.client() as client:
        leader = client.master_statuses()
        addr = next(s["address"] for s in leader if s.get("role") == "leader")
    header = pb.RequestHeader(client_id=b"k" * 16, seq=1, ack_seq=0)
    with grpc.insecure_channel(addr) as ch:
        stub = pb_grpc.MasterStub(ch)
        auth = bearer(c.admin_token)
        first = stub.Mkdir(pb.MkdirRequest(header=header, path="/once"), timeout=5, metadata=auth)
        again = stub.Mkdir(pb.MkdirRequest(header=header, path="/once"), timeout=5, metadata=auth)
        assert again.inode == first.inode   # the stored result, not ALREADY_EXISTS
        with pytest.raises(grpc.RpcError) as err:
            stub.Mkdir(pb.MkdirRequest(header=pb.RequestHeader(client_id=b"k" * 16, seq=2),
                                       path="/once"), timeout=5, metadata=auth)
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_follower_redirects_to_leader(make_cluster):
    c = make_cluster(options=FAST)
    leader = c.leader()
    follower = next(d for d in c.daemons() if d["name"] != leader)
    with grpc.insecure_channel(follower["grpc"]) as ch:
        with pytest.raises(grpc.RpcError) as err:
            pb_grpc.MasterStub(ch).Mkdir(pb.MkdirRequest(path="/x"), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    hint = dict(err.value.trailing_metadata())["gfs-leader"]
    assert hint == c.daemon(leader)["grpc"]
    # The client, given only the follower, finds the leader by itself.
    with Client([follower["grpc"]], token=c.admin_token) as client:
        client.mkdir("/via-follower")
        assert client.stat("/via-follower").is_dir


# --- the CLI against real daemons ----------------------------------------------------------------

def gfs(*args, env=None, check=True, timeout=60):
    proc = subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"gfs {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def test_cli_cluster_lifecycle_and_namespace(tmp_path):
    env = {**os.environ, "GFS_CONFIG_DIR": str(tmp_path / "cfg")}
    env.pop("GFS_MASTERS", None)
    data = str(tmp_path / "c")
    try:
        gfs("cluster", "up", "--masters", "3", "--data", data, env=env)
        # No flags: the CLI finds the cluster `up` recorded.
        gfs("mkdir", "-p", "/a/b/c", env=env)
        gfs("mkdir", "/a/d", env=env)
        assert gfs("ls", "/a", env=env).stdout.split() == ["b/", "d/"]
        info = json.loads(gfs("stat", "--json", "/a/b", env=env).stdout)
        assert info["type"] == "dir" and info["path"] == "/a/b"
        gfs("mv", "/a/d", "/a/b/d", env=env)
        assert gfs("ls", "/a/b", env=env).stdout.split() == ["c/", "d/"]
        long = gfs("ls", "-l", "/a", env=env).stdout
        assert "drwxr-xr-x" in long
        gfs("rm", "-r", "/a/b", env=env)
        assert gfs("ls", "/a", env=env).stdout.split() == []
        ms = json.loads(gfs("master", "status", "--json", env=env).stdout)
        assert sorted(m["role"] for m in ms) == ["follower", "follower", "leader"]
        assert len({m["term"] for m in ms}) == 1
        st = json.loads(gfs("cluster", "status", "--json", "--data", data, env=env).stdout)
        assert [r["health"] for r in st] == ["ok"] * 3 and all(r["pid"] for r in st)
        # Bad input: one line, non-zero exit, no traceback.
        for args, word in [(("mkdir", "relative"), "invalid argument"),
                           (("mkdir", "/a/../b"), "invalid argument"),
                           (("rm", "/nope"), "not found"),
                           (("mkdir", "/a"), "already exists"),
                           (("mv", "/a", "/a/inside"), "invalid argument"),
                           (("ls", "/nope"), "not found")]:
            p = gfs(*args, env=env, check=False)
            assert p.returncode == 1 and p.stderr.startswith("gfs: " + word), (args, p.stderr)
            assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
        # Restarting an existing cluster keeps its data.
        gfs("cluster", "down", "--data", data, env=env)
        down = json.loads(gfs("cluster", "status", "--json", "--data", data, env=env,
                              check=False).stdout)
        assert [r["health"] for r in down] == ["down"] * 3
        gfs("cluster", "up", "--data", data, env=env)
        assert gfs("ls", "/", env=env).stdout.split() == ["a/"]
    finally:
        gfs("cluster", "down", "--data", data, env=env, check=False)


def test_cli_reports_unreachable_cluster_in_one_line(tmp_path):
    env = {**os.environ, "GFS_CONFIG_DIR": str(tmp_path / "cfg"), "GFS_MASTERS": "127.0.0.1:1"}
    p = gfs("--timeout", "1", "ls", "/", env=env, check=False)
    assert p.returncode == 1 and p.stderr.startswith("gfs: unavailable:"), p.stderr
    env.pop("GFS_MASTERS")
    p = gfs("ls", "/", env=env, check=False)
    assert p.returncode == 1 and "gfs cluster up" in p.stderr


def test_every_master_serves_prometheus_metrics_and_json_logs(make_cluster):
    import urllib.request
    c = make_cluster(options=FAST)
    with c.client() as client:
        client.mkdir("/m")
        client.stat("/m")
    leaders = 0
    for d in c.daemons():
        body = urllib.request.urlopen(f"http://{d['metrics']}/metrics", timeout=5).read().decode()
        assert "gfs_master_raft_term" in body and "gfs_master_applied_index" in body
        leaders += int("gfs_master_is_leader 1.0" in body)
        if "gfs_master_is_leader 1.0" in body:
            assert 'gfs_rpc_requests_total{code="OK",daemon="master",method="Mkdir"}' in body
        lines = (Path(d["data"]) / "daemon.log").read_text().splitlines()
        assert lines and all(json.loads(line)["daemon"] == d["name"] for line in lines)
    assert leaders == 1


def test_exactly_once_results_of_clients_that_went_away_are_forgotten(make_cluster):
    """Every `gfs` command is a new client whose last result stays for exactly-once retries;
    after --session-ttl the leader forgets them (through the log, on every master)."""
    from polling import wait_for
    ttl = 20      # longer than five `gfs` runs take on a loaded machine (3 s was not, in CI)
    cluster = make_cluster(masters=3, options={"master": {"session-ttl": ttl,
                                                          "election-timeout": 0.3}})
    env = cluster.cli_env()
    started = time.monotonic()
    for i in range(5):
        subprocess.run([sys.executable, "-m", "cli.main", "mkdir", f"/d{i}"], env=env,
                       check=True, capture_output=True, timeout=60)
    with cluster.client() as c:
        results = c.health()["session_results"]
        assert time.monotonic() - started < ttl, "the five runs took longer than the TTL"
        assert results >= 5
        wait_for(lambda: c.health()["session_results"] == 0, ttl + 30,
                 "old results to be forgotten")
        assert sorted(e.path for e in c.list("/")) == [f"/d{i}" for i in range(5)]
        c.mkdir("/after")                                 # a live client keeps working
        assert c.health()["session_results"] == 1


def _metric(daemon: dict, name: str) -> float:
    import urllib.request
    body = urllib.request.urlopen(f"http://{daemon['metrics']}/metrics", timeout=5).read()
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in {daemon['name']}'s metrics")


def test_read_rounds_go_over_udp_and_over_the_raft_connections_without_it(make_cluster):
    """Linearizable reads take their read-index rounds over UDP, on the masters' event loops
    (master/fastprobe.py); where the masters cannot have their UDP port (taken here, as a
    firewall would drop it), over the Raft connections: the same answers either way, and a
    write made just before a read is always seen."""
    import socket

    def reads_see_writes(c) -> dict:
        with c.client() as client:
            client.mkdir("/r")
            for i in range(150):
                client.mkdir(f"/r/{i}")
                assert client.stat(f"/r/{i}").is_dir
        return c.daemon(c.leader())

    fast = make_cluster(options=FAST, name="udp")
    leader = reads_see_writes(fast)
    assert _metric(leader, "gfs_master_read_rounds_udp") > 0
    # the client's calls arrived as messages of its call stream (gfs/callstream.py)
    assert _metric(leader, "gfs_master_streamed_calls") >= 290
    assert _metric(leader, "gfs_master_streamed_calls_refused") == 0
    blocked = make_cluster(options=FAST, name="no-udp", start=False)
    taken = []
    try:
        for m in blocked.spec["masters"]:
            host, port = m["raft"].rsplit(":", 1)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((host, int(port)))
            taken.append(sock)
        blocked.up()
        leader = reads_see_writes(blocked)
        assert _metric(leader, "gfs_master_read_rounds_udp") == 0
        assert _metric(leader, "gfs_master_read_rounds") >= 150
    finally:
        for sock in taken:
            sock.close()
