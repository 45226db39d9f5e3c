"""The chaos runner keeps a failed run's cluster and daemon logs (and says where); a passing
run cleans up. A laid-out cluster directory, no daemons."""
import json

from bench.chaos.runner import failures, keep_or_clean
from cli.localcluster import LocalCluster


def summary(**kw):
    return {"lost": 0, "linearizable": True, "full_redundancy_s": 12.5, **kw}


def laid_out(tmp_path):
    cluster = LocalCluster(tmp_path / "run" / "cluster")
    cluster.create(masters=3, chunkservers=2)
    for d in cluster.daemons():
        (tmp_path / "run" / "cluster" / d["name"]).mkdir(parents=True, exist_ok=True)
        (tmp_path / "run" / "cluster" / d["name"] / "daemon.log").write_text("{}\n")
    return tmp_path / "run", cluster


def test_what_fails_a_run():
    assert failures(summary()) == []
    assert failures(summary(lost=2, linearizable=False, full_redundancy_s=None)) == [
        "2 acknowledged operations lost", "not linearizable",
        "full redundancy not reached after healing"]
    assert failures(summary(unclean_errors=1)) == ["1 operations ended in an unclean error"]


def test_a_failed_run_keeps_everything_and_says_where(tmp_path, capsys):
    base, cluster = laid_out(tmp_path)
    s = summary(full_redundancy_s=None)
    keep_or_clean(base, cluster, s, keep=False)
    out = capsys.readouterr().out
    assert s["kept"] == str(base) and base.is_dir()
    assert "chaos: FAILED (full redundancy not reached after healing); kept for diagnosis in" in out
    for d in cluster.daemons():
        log = base / "cluster" / d["name"] / "daemon.log"
        assert log.exists() and str(log) in out
    assert json.loads((base / "summary.json").read_text())["kept"] == str(base)


def test_a_passing_run_cleans_up_unless_asked_to_keep(tmp_path):
    base, cluster = laid_out(tmp_path)
    keep_or_clean(base, cluster, summary(), keep=True)
    assert base.is_dir()
    keep_or_clean(base, cluster, summary(), keep=False)
    assert not base.exists()


def test_disk_fault_choices_name_real_files_and_operations():
    import random
    from bench.chaos.diskfaults import pick_eio
    from bench.chaos.faultfs.faults import EIO_OPS
    rng = random.Random(1)
    for master in (True, False):
        for _ in range(50):
            glob, ops = pick_eio(rng, master)
            assert ops and set(ops) <= set(EIO_OPS)
            assert glob.startswith("raft/") if master else glob.split("/")[0] in ("hot", "tmp")
