"""Applied entries committed to LMDB together (master/commit_gate.py), with real masters: a
write is answered before LMDB commits it, so everything that reads after it — the writer's own
next request, a linearizable read, a kill -9 of every master — must still see it. The masters
run with the longest commit delay (1 s) so that every check happens before that commit."""
from __future__ import annotations

import io
import os
import re
import signal
import time
import urllib.request

import pytest

from tests.integration.test_masters import Writer, all_names

SLOW_COMMITS = {"master": {"election-timeout": 0.3, "commit-delay": 1.0, "chunk-size": "1MiB"},
                "chunkserver": {"heartbeat-interval": 0.3}}


def leader_metric(cluster, name: str) -> float:
    leader = cluster.daemon(cluster.leader())
    body = urllib.request.urlopen(f"http://{leader['metrics']}/metrics", timeout=5).read().decode()
    return float(re.search(rf"^{name} (\S+)$", body, re.M).group(1))


@pytest.mark.parametrize("read_mode", ["index", "lease"])
def test_requests_see_their_own_writes_before_lmdb_commits_them(make_cluster, read_mode):
    options = {**SLOW_COMMITS, "master": {**SLOW_COMMITS["master"], "read-mode": read_mode}}
    c = make_cluster(options=options, start=False)
    for _ in range(3):
        c.add_chunkserver()
    c.up()
    with c.client() as client:
        started = time.monotonic()
        for i in range(20):
            client.mkdir(f"/d{i}")
            assert client.stat(f"/d{i}").is_dir          # a linearizable read commits at once
        data = os.urandom(3 * 1024 * 1024 + 17)          # chunks: create, allocate, commit
        info = client.put(io.BytesIO(data), "/d0/f")
        assert info.size == len(data)
        out = io.BytesIO()
        client.get("/d0/f", out)
        assert out.getvalue() == data
        # Each read asked for the commit instead of waiting out the 1 s delay.
        assert time.monotonic() - started < 15


def test_entries_are_committed_to_lmdb_many_at_a_time(make_cluster):
    c = make_cluster(options=SLOW_COMMITS)
    entries, commits = (leader_metric(c, "gfs_master_committed_index"),
                        leader_metric(c, "gfs_master_state_commits"))
    w = Writer(c.master_addresses(), threads=4, token=c.admin_token).start()
    time.sleep(2.5)
    w.stop()
    time.sleep(1.5)                                     # the last ones reach LMDB by the delay
    entries = leader_metric(c, "gfs_master_committed_index") - entries
    commits = leader_metric(c, "gfs_master_state_commits") - commits
    assert len(w.acked) > 50 and not w.errors
    # Besides the 1 s delay, the leader's own loops (repair, GC, ...) reading the store ask
    # for commits now and then: still many entries per fdatasync.
    assert entries > 50 and entries / max(commits, 1) >= 20, (entries, commits)
    with c.client() as client:
        assert set(w.acked) <= all_names(client)


def test_kill_9_of_every_master_before_lmdb_commits_loses_nothing_acknowledged(make_cluster):
    """The acknowledged entries LMDB had not committed come back from the journal."""
    c = make_cluster(options=SLOW_COMMITS)
    acked: list[str] = []
    for r in range(2):
        w = Writer(c.master_addresses(), threads=4, prefix=f"/k{r}-", token=c.admin_token).start()
        time.sleep(0.7)
        for pid in [c.pid(d["name"]) for d in c.daemons()]:
            os.kill(pid, signal.SIGKILL)
        for d in c.daemons():
            c._wait_gone(d["name"], 10)
        c.up()
        w.stop()
        acked += w.acked
        with c.client(deadline=30) as client:
            names = all_names(client)
        missing = [p for p in acked if p not in names]
        assert not missing, f"round {r}: {len(missing)} acknowledged mkdirs lost: {missing[:5]}"
    assert len(acked) > 20


def test_a_new_leader_answers_reads_before_any_write_of_its_term(make_cluster):
    """A new leader's last entry is its no-op, which changes no state: reads wait for it to be
    applied, not for a commit of LMDB that no entry asks for."""
    c = make_cluster(options=SLOW_COMMITS)
    with c.client() as client:
        client.mkdir("/before")
    c.kill(c.leader())
    deadline = time.monotonic() + 20
    while c.leader() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    with c.client(deadline=10) as client:
        started = time.monotonic()
        assert client.stat("/before").is_dir
        assert time.monotonic() - started < 1.0
