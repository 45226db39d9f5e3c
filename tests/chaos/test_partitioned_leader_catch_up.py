"""A leader cut off from the other masters under load keeps taking commands that never commit;
when the partition heals it must catch up with the new leader's log — and a membership change
that then needs its vote must go through (the chaos suite once stopped there: the rejoined
master never caught up, master/catch_up.py). Real masters on their own network namespaces,
partitions made with nftables, the checkers judge the run."""
import pytest

from bench.chaos.netns import NetLab, NetLabUnavailable
from bench.chaos.runner import run
from chaos_verdict import assert_clean, seed_from_env, show

FIRST = ["partition_leader", "replace_member"] * 3


@pytest.fixture
def netns():
    try:
        NetLab(1).teardown()
    except NetLabUnavailable as err:
        pytest.skip(str(err))


@pytest.mark.timeout(600)
def test_a_leader_cut_off_under_load_catches_up_and_members_change_after(netns, capsys):
    seed = seed_from_env()
    summary = run(1.0, seed, masters=3, chunkservers=3, threads=6, faultfs=False,
                  first_kinds=FIRST)
    show(capsys, summary)
    assert summary["partitions"], "the run had no network namespaces"
    assert_clean(summary, seed)
    assert summary["faults"]["partition_leader"] >= 2, summary["faults"]
    assert summary["faults"]["replace_member"] >= 2, summary["faults"]
