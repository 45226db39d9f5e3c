"""bench/chaos/record.py: campaigns append judged segments, resume after an interruption, stop
at a failure, and the totals add up."""
import pytest

from bench.chaos import record


def summary(seed, minutes, lost=0, linearizable=True, **kw):
    return {**kw, "seed": seed, "minutes": minutes, "fault_seconds": minutes * 60,
            "faults": {"kill_leader": 2, "power_loss_all": 1, "slow_link": 0},
            "master_kills": 5, "whole_cluster_power_losses": 1, "operations": 100,
            "acknowledged": 90, "lost": lost, "linearizable": linearizable,
            "full_redundancy_s": 1.0}


def test_a_campaign_resumes_where_it_was_interrupted(tmp_path):
    path = tmp_path / "record.json"
    seeds = []

    def flaky(minutes, seed):
        seeds.append(seed)
        if len(seeds) == 3:
            raise KeyboardInterrupt            # cut short: this segment is not counted
        return summary(seed, minutes)

    with pytest.raises(KeyboardInterrupt):
        record.campaign(0.5, 10, 1000, flaky, path)
    assert len(record.load(path)["campaigns"][0]["segments"]) == 2
    assert record.campaign(0.5, 10, None, lambda m, s: seeds.append(s) or summary(s, m),
                           path) == 0
    r = record.load(path)
    assert len(r["campaigns"]) == 1 and r["campaigns"][0]["finished"]
    assert [s["seed"] for s in r["campaigns"][0]["segments"]] == [1000, 1001, 1002]
    t = r["totals"]
    assert (t["runs"], t["hours"], t["master_kills"], t["whole_cluster_power_losses"]) == \
        (3, 0.5, 15, 3)
    assert t["faults"] == {"kill_leader": 6, "power_loss_all": 3}
    assert (t["operations"], t["acknowledged"], t["lost"], t["linearizable_runs"]) == \
        (300, 270, 0, 3)
    # a finished campaign is not resumed: the same command starts a new one
    record.campaign(0.5, 30, 7, lambda m, s: summary(s, m), path)
    assert len(record.load(path)["campaigns"]) == 2


def test_a_failed_segment_ends_the_campaign(tmp_path):
    path = tmp_path / "record.json"
    status = record.campaign(1, 10, 5, lambda m, s: summary(s, m, lost=s == 6), path)
    assert status == 1
    r = record.load(path)
    assert len(r["campaigns"][0]["segments"]) == 2 and r["campaigns"][0]["failed"]
    assert r["totals"]["lost"] == 1
    record.add_run(summary(9, 2.5, linearizable=None), path)
    assert record.load(path)["totals"]["not_linearizable_runs"] == 1


def test_a_segment_that_stops_with_an_error_fails_the_campaign_and_is_recorded(tmp_path):
    """Not judged, so not in the runs' sums — but never silently dropped from the record."""
    path = tmp_path / "record.json"

    def dies(minutes, seed):
        if seed == 3:
            raise RuntimeError("master-1 exited with code -7")
        return summary(seed, minutes)
    assert record.campaign(1, 10, 2, dies, path) == 1
    r = record.load(path)
    c = r["campaigns"][0]
    assert c["failed"] and c["finished"] and len(c["segments"]) == 1
    assert c["errored"]["seed"] == 3 and "code -7" in c["errored"]["error"]
    assert r["totals"]["errored_runs"] == 1 and r["totals"]["runs"] == 1


def test_runs_on_faultfs_are_summed_apart_and_unclean_errors_fail_a_segment(tmp_path):
    path = tmp_path / "record.json"
    record.add_run(summary(1, 6), path)                       # an older run on the bare disk
    status = record.campaign(0.2, 6, 5, lambda m, s: summary(s, m, faultfs=True,
                                                             unclean_errors=int(s == 6)), path)
    assert status == 1
    r = record.load(path)
    assert [s["disks"] for c in r["campaigns"] for s in c["segments"]] == \
        ["bare", "faultfs", "faultfs"]
    f = r["totals"]["faultfs"]
    assert (f["runs"], f["hours"], f["master_kills"], f["whole_cluster_power_losses"],
            f["unclean_errors"]) == (2, 0.2, 10, 2, 1)
    assert r["totals"]["master_kills"] == 15
