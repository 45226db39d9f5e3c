"""Smoke test of the benchmark suite: the quick profile of a small subset (metadata with etcd
beside it, a tiny data path, one failover) through `python -m bench`, as a user runs it, and
the tiering benchmark on its own with tiny sizes. It fails when any benchmark errors, when the
report, the JSON or the plots are missing, or when a figure lacks its reference; the etcd part
is skipped (with its reason in the report) where etcd cannot run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["metadata", "datapath", "failover", "--quick", "--concurrency", "1,4",
        "--seconds", "1", "--warmup", "0.3", "--size", "1MiB", "--clients", "1",
        "--replication", "3", "--kills", "1"]


TIERING_ARGS = ["tiering", "--quick", "--size", "4MiB", "--kinds", "text", "--capacity", "160MiB"]


def bench(args: list[str], tmp_path_factory, timeout: float):
    """`python -m bench ARGS` into fresh out and data directories: (process, out, seconds).
    Past `timeout` the bench gets SIGTERM (it stops its clusters) before the test fails."""
    out = tmp_path_factory.mktemp("bench-out")
    data = tmp_path_factory.mktemp("bench-data")
    t = time.monotonic()
    popen = subprocess.Popen([sys.executable, "-m", "bench", *args, "--out", str(out),
                              "--data", str(data)], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        stdout, stderr = popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stdout, stderr = stop(popen)
        pytest.fail(f"bench {' '.join(args)} ran past {timeout:.0f} s\n{stdout[-3000:]}"
                    f"{stderr[-3000:]}")
    proc = subprocess.CompletedProcess(popen.args, popen.returncode, stdout, stderr)
    return proc, out, time.monotonic() - t


def stop(popen: subprocess.Popen, grace: float = 60.0) -> tuple[str, str]:
    """SIGTERM, then SIGKILL after `grace`: the bench's output so far."""
    popen.send_signal(signal.SIGTERM)
    try:
        return popen.communicate(timeout=grace)
    except subprocess.TimeoutExpired:
        popen.kill()
        return popen.communicate()


def daemon_pids(data: Path) -> set[int]:
    """The pids of every daemon of every local cluster under `data` (running or not)."""
    pids = set()
    for f in data.rglob("pid"):
        try:
            pids.add(int(f.read_text()))
        except (OSError, ValueError):
            pass
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in \
        Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return bench(ARGS, tmp_path_factory, 150)


@pytest.mark.timeout(200)
def test_quick_subset_writes_report_json_and_plots(run):
    proc, out, wall = run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert wall < 100, f"the quick subset took {wall:.0f} s"
    (js,) = out.glob("*.json")
    payload = json.loads(js.read_text())
    assert payload["profile"] == "quick"
    assert set(payload["suites"]) == {"metadata", "datapath", "failover"}
    for name, res in payload["suites"].items():
        assert "error" not in res, f"{name}: {res.get('error')}"
    refs = payload["refs"]
    for key in ("disk_write_mb_s", "disk_cold_read_mb_s", "fsync_ops_s", "loopback_tcp_mb_s"):
        assert refs[key]["median"] > 0, key

    meta = payload["suites"]["metadata"]
    points = meta["gfs"]["points"]
    assert {(p["op"], p["concurrency"]) for p in points} == {
        (op, c) for op in ("create", "stat", "list", "rename") for c in (1, 4)}
    assert all(p["ops_s"]["median"] > 0 and p["errors"] == 0 for p in points), points
    floor = meta["grpc_floor"]["points"]       # stat against a no-op grpc.aio server
    assert [p["concurrency"] for p in floor] == [1, 4]
    assert all(p["ops_s"]["median"] > 0 and p["errors"] == 0 for p in floor), floor
    if "skipped" not in meta["etcd"]:
        assert all(p["ops_s"]["median"] > 0 and p["errors"] == 0
                   for p in meta["etcd"]["points"])
        assert len(payload["suites"]["failover"]["etcd"]["seconds"]) == 1

    data = payload["suites"]["datapath"]
    assert {r["op"] for r in data["results"]} == {"put", "get-null", "get"}
    assert all(r["mb_s"]["median"] > 0 and r["errors"] == 0 for r in data["results"])
    assert all(v["peak_rss"] for k, v in data["processes"].items() if k.startswith("chunkserver"))
    assert len(payload["suites"]["failover"]["gfs"]["seconds"]) == 1

    (md,) = out.glob("*.md")
    text = md.read_text()
    for heading in ("## Machine limits", "## metadata", "## datapath", "## failover",
                    "## Daemons"):
        assert heading in text
    assert "× fsync" in text and "× raw write" in text and "× election timeout" in text
    assert "gfs ÷ etcd" in text and "gfs ÷ floor" in text
    if "skipped" in meta["etcd"]:
        assert meta["etcd"]["skipped"] in text                 # the reason is shown
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert any(p.endswith("-metadata-throughput.png") for p in pngs), pngs
    assert any(p.endswith("-metadata-latency.png") for p in pngs), pngs
    assert any(p.endswith("-datapath-throughput.png") for p in pngs), pngs
    for p in out.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({p.name})" in text                          # embedded in the report


@pytest.mark.timeout(200)
def test_tiering_quick_reports_compression_moves_gets_and_balance(tmp_path_factory):
    proc, out, wall = bench(TIERING_ARGS, tmp_path_factory, 150)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert wall < 60, f"the tiny tiering run took {wall:.0f} s"
    (js,) = out.glob("*.json")
    res = json.loads(js.read_text())["suites"]["tiering"]
    assert "error" not in res and not res["part_errors"], res.get("error") or res["part_errors"]
    text = res["tiers"]["kinds"]["text"]
    assert 0 < text["stored_ratio"]["median"] < 0.5          # log lines compress in the cold tier
    for key in ("to_cold_mb_s", "to_hot_mb_s", "hot_evicted_mb_s", "cold_evicted_mb_s",
                "hot_warm_mb_s", "cold_warm_mb_s"):
        assert text[key]["median"] > 0, key
    if "skipped" not in res["balance"]:
        (setting,) = res["balance"]["settings"]
        (runs,) = setting["runs"]
        assert runs["moved_bytes"] > 0 and runs["new_use"] > 0
        assert runs["final_spread"] <= runs["threshold"] and runs["under_replicated"] == 0
    md = next(out.glob("*.md")).read_text()
    for words in ("stored ÷ logical", "× raw write", "× raw cold read", "### Rebalancing"):
        assert words in md, words
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert any(p.endswith("-tiering-throughput.png") for p in pngs), pngs
    if "skipped" not in res["balance"]:
        assert any(p.endswith("-tiering-balance.png") for p in pngs), pngs
    for p in pngs:
        assert f"]({p})" in md                                 # embedded in the report


AUTH_COST_ARGS = ["auth_cost", "--quick", "--reps", "1", "--seconds", "1", "--warmup", "0.2",
                  "--concurrency", "2", "--ops", "create,stat", "--size", "2MiB"]


@pytest.mark.timeout(260)
def test_auth_cost_quick_measures_three_clusters_side_by_side(tmp_path_factory):
    proc, out, wall = bench(AUTH_COST_ARGS, tmp_path_factory, 240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (js,) = out.glob("*.json")
    res = json.loads(js.read_text())["suites"]["auth_cost"]
    assert "error" not in res, res.get("error")
    configs = {"auth+tls", "auth", "insecure"}
    assert [(p["op"], p["concurrency"]) for p in res["metadata"]] == [("create", 2), ("stat", 2)]
    assert [p["op"] for p in res["data"]] == ["put", "get"]
    for p in res["metadata"]:
        assert set(p["configs"]) == configs
        for c in p["configs"].values():
            assert c["ops_s"]["median"] > 0 and c["errors"] == 0 and c["cpu_ms_per_op"] >= 0
    for p in res["data"]:
        for c in p["configs"].values():
            assert c["mb_s"]["median"] > 0 and c["errors"] == 0, c["first_error"]
    assert set(res["idle_cpu_s_per_s"]) == configs
    md = next(out.glob("*.md")).read_text()
    for words in ("÷ insecure", "≥ 0.90", "≥ 0.95", "CPU ÷ insecure", "auth+tls", "baseline"):
        assert words in md, words
    assert any(p.name.endswith("-auth-cost-metadata.png") for p in out.glob("*.png"))


def test_bad_arguments_fail_clearly():
    for argv, message in ((["nosuch"], "unknown benchmark"),
                          (["metadata", "--kills", "2"], "not an option of metadata"),
                          (["metadata", "--concurrency", "0"], "at least 1"),
                          (["tiering", "--capacity", "100MiB"], "at least 160.0 MiB"),
                          (["tiering", "--kinds", "zeros"], "--kinds wants"),
                          (["metadata", "--data", "/proc/no/such/dir"], "--data /proc/no/such")):
        proc = subprocess.run([sys.executable, "-m", "bench", *argv], check=False, cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and message in proc.stderr, (argv, proc.stderr)
        assert "Traceback" not in proc.stderr


@pytest.mark.timeout(120)
def test_a_bench_stopped_with_sigterm_stops_its_clusters(tmp_path):
    """A bench stopped by a timeout or its user must not leave its cluster's daemons running
    (they run in their own sessions, so they outlive the bench unless it stops them)."""
    data = tmp_path / "data"
    data.mkdir()
    popen = subprocess.Popen([sys.executable, "-m", "bench", "datapath", "--quick", "--size",
                              "64MiB", "--clients", "1", "--reps", "3", "--out",
                              str(tmp_path / "out"), "--data", str(data), "--no-etcd"],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 60
        while not any(alive(p) for p in daemon_pids(data)):
            assert popen.poll() is None, popen.communicate()
            assert time.monotonic() < deadline, "no cluster started within 60 s"
            time.sleep(0.2)
        pids = daemon_pids(data)
        stdout, stderr = stop(popen)
        assert popen.returncode == 128 + signal.SIGTERM, stdout[-2000:] + stderr[-2000:]
        pids |= daemon_pids(data)
        left = [p for p in pids if alive(p)]
        assert not left, f"daemons left running after SIGTERM: {left}"
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait()
        for p in daemon_pids(data):
            if alive(p):
                os.kill(p, signal.SIGKILL)


@pytest.mark.timeout(200)
def test_cpu_per_op_probe_reports_the_leader_followers_and_clients():
    """bench/cpu_per_op.py: one short stat window on a real cluster, CPU per op by process."""
    proc = subprocess.run([sys.executable, "-m", "bench.cpu_per_op", "--op", "stat",
                           "--clients", "2", "--seconds", "1"], check=False, cwd=ROOT,
                          capture_output=True, text=True, timeout=180,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith("stat x2: ") and "errors 0" in line, line
    cpu = dict(part.rsplit(" ", 1) for part in line.split("CPU ms/op: ")[1].split(", "))
    assert float(cpu["leader"]) > 0 and float(cpu["clients"]) > 0, line
    assert len(cpu) == 4, line                      # the leader, two followers, the clients
