"""The chaos suite's CI profile: ~2.5 minutes of faults under load, judged by the checkers.

The long profile is the same runner for as long as asked:
    ./run.sh chaos --minutes 30 [--seed N]
"""
import os
import random

from bench.chaos.runner import report, run


def test_chaos_ci_profile(capsys):
    seed = int(os.environ.get("GFS_CHAOS_SEED") or random.randrange(1 << 31))
    minutes = float(os.environ.get("GFS_CHAOS_MINUTES", "2.5"))
    summary = run(minutes, seed, masters=3, chunkservers=4, threads=6)
    with capsys.disabled():
        print("\n" + report(summary))
    kept = f" (cluster and daemon logs kept in {summary.get('kept')})"
    assert summary["lost"] == 0, \
        f"seed {seed}: acknowledged data lost: {summary['lost_detail']}{kept}"
    assert summary["linearizable"] is True, f"seed {seed}: {summary['violations']}{kept}"
    assert sum(summary["faults"].values()) >= 10, f"seed {seed}: too few faults injected"
    assert summary["acknowledged"] > 1000
    assert summary["full_redundancy_s"] is not None, \
        f"seed {seed}: never back to full redundancy after healing: " \
        f"{summary['final_health']}{kept}"
