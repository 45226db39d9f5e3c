"""The chaos suite's membership-change fault (bench/chaos/nemesis.py `replace_member`) in a
short targeted run: members removed, wiped and added back empty under load, between master
kills, and the checkers stay clean (nothing acknowledged lost, the history linearizable)."""
import os
import random

import pytest

from bench.chaos.runner import report, run

FIRST = ["replace_member", "kill_leader", "replace_member", "kill_follower", "replace_member"]


@pytest.mark.timeout(600)
def test_members_replaced_under_load_between_kills(capsys):
    seed = int(os.environ.get("GFS_CHAOS_SEED") or random.randrange(1 << 31))
    summary = run(0.75, seed, masters=3, chunkservers=3, threads=4, use_netns=False,
                  faultfs=False, first_kinds=FIRST)
    with capsys.disabled():
        print("\n" + report(summary))
    kept = f" (cluster and daemon logs kept in {summary.get('kept')})"
    assert summary["lost"] == 0, \
        f"seed {seed}: acknowledged data lost: {summary['lost_detail']}{kept}"
    assert summary["linearizable"] is True, f"seed {seed}: {summary['violations']}{kept}"
    assert summary["unclean_errors"] == 0, f"seed {seed}: {summary['unclean_detail']}{kept}"
    assert summary["faults"]["replace_member"] >= 2, summary["faults"]
    assert summary["acknowledged"] > 100
