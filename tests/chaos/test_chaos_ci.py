"""The chaos suite's CI profile: ~2.5 minutes of faults under load, with auth and TLS on,
judged by the checkers. Every daemon runs on FaultFS where FUSE works, so a power loss cuts
every byte not made durable. The faults added in the suite's second generation (clock jumps,
whole-cluster power loss, on FaultFS failing and full disks and slow fsyncs, and with network
namespaces one-way partitions, lossy and slow links) and the membership change (a master
removed, wiped and added back empty) are injected first, so every run samples them; the
shuffled deck of every kind follows.

The long profile is the same runner for as long as asked:
    ./run.sh chaos --minutes 30 [--seed N]      one run
    ./run.sh chaos --hours N                    a resumable campaign, added to the record
"""
import os

import pytest

from bench.chaos.diskfaults import DISK_FAULTS
from bench.chaos.nemesis import NETWORK_FAULTS
from bench.chaos.runner import run
from chaos_verdict import assert_clean, seed_from_env, show

NEW_FAULTS = ["clock_jump_leader", "one_way_leader", "lossy_link", "slow_link", "power_loss_all",
              "disk_eio_chunkserver", "disk_full_leader", "slow_fsync", "replace_member"]


@pytest.mark.timeout(900)     # 2.5 min of faults; setup and power losses on FaultFS are slow
def test_chaos_ci_profile(capsys):
    seed = seed_from_env()
    minutes = float(os.environ.get("GFS_CHAOS_MINUTES", "2.5"))
    summary = run(minutes, seed, masters=3, chunkservers=4, threads=6, first_kinds=NEW_FAULTS)
    show(capsys, summary)
    assert_clean(summary, seed)
    kept = f" (cluster and daemon logs kept in {summary.get('kept')})"
    assert sum(summary["faults"].values()) >= 10, f"seed {seed}: too few faults injected"
    sampled = [k for k in NEW_FAULTS if (summary["partitions"] or k not in NETWORK_FAULTS)
               and (summary["faultfs"] or k not in DISK_FAULTS)]
    assert all(summary["faults"][k] for k in sampled), summary["faults"]
    assert summary["security"].startswith("auth + TLS")
    assert summary["acknowledged"] > 1000
    assert summary["full_redundancy_s"] is not None, \
        f"seed {seed}: never back to full redundancy after healing: " \
        f"{summary['final_health']}{kept}"
