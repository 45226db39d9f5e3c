"""The chaos suite's membership-change fault (bench/chaos/nemesis.py `replace_member`) in a
short targeted run: members removed, wiped and added back empty under load, between master
kills, and the checkers stay clean (nothing acknowledged lost, the history linearizable)."""
import pytest

from bench.chaos.runner import run
from chaos_verdict import assert_clean, seed_from_env, show

FIRST = ["replace_member", "kill_leader", "replace_member", "kill_follower", "replace_member"]


@pytest.mark.timeout(600)
def test_members_replaced_under_load_between_kills(capsys):
    seed = seed_from_env()
    summary = run(0.75, seed, masters=3, chunkservers=3, threads=4, use_netns=False,
                  faultfs=False, first_kinds=FIRST)
    show(capsys, summary)
    assert_clean(summary, seed)
    assert summary["faults"]["replace_member"] >= 2, summary["faults"]
    assert summary["acknowledged"] > 100
