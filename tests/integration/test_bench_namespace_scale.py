"""Smoke test of bench/namespace_scale.py at a tiny size, run as a user runs it, so the bench
cannot rot: three real masters restored from a namespace built by the apply code, every phase
run, and the report (markdown and JSON) holding every figure."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.integration.test_bench_smoke import stop

ROOT = Path(__file__).resolve().parents[2]
FILES = 2000
DEADLINE_S = 90           # the brief: < 90 s (~40 s on this machine, loaded)


def test_namespace_scale_bench_reports_every_figure(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    popen = subprocess.Popen([sys.executable, "-m", "bench.namespace_scale", "--files",
                              str(FILES), "--window", "1", "--compact-entries", "100",
                              "--timeout", "60", "--work", str(work), "--out", str(out)],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        stdout, stderr = popen.communicate(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        stdout, stderr = stop(popen)          # SIGTERM: the bench stops its cluster
        raise AssertionError(f"the bench took over {DEADLINE_S} s: {stderr[-3000:]}") from None
    assert popen.returncode == 0, stderr[-3000:]
    [report] = out.glob(f"*-namespace-scale-{FILES}.json")
    r = json.loads(report.read_text())
    assert (out / report.name.replace(".json", ".md")).read_text() in stdout
    assert r["files"] == FILES
    assert r["list"]["entries"] == FILES and r["list"]["pages"] == 2
    assert r["catch_up"]["by_snapshot"] is True and r["catch_up"]["s"] > 0
    assert r["leader_restart"]["new_leader_serves_stat_s"] > 0
    assert r["leader_restart"]["old_leader_restart_to_caught_up_s"] > 0
    assert r["gone"] is True
    for key in ("start_s", "rm_r_s", "purge_call_s", "purge_until_reaped_s"):
        assert r[key] > 0, key
    for figure in ("rss_after_start_mib", "rss_peak_mib"):
        assert len(r[figure]) == 3 and all(v and v > 10 for v in r[figure].values()), figure
    assert set(r["phases"]) == {"baseline", "list", "until a snapshot", "catch-up", "leader killed",
                                "old leader restarts", "rm -r", "purge + reap", "after"}
    for name in ("baseline", "catch-up", "after"):
        creates = r["phases"][name]["creates"]
        assert creates["n"] > 0 and creates["p99_ms"] >= creates["p50_ms"] > 0, name
    assert not work.exists()              # the bench cleans up after itself
