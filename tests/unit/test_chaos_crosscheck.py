"""bench/chaos/crosscheck.py: reading porcupine's verdicts, comparing them with ours, and the
campaign's sampled cross-checks. The porcupine binary itself is faked here (a script printing
its JSON lines); tests/unit/test_chaos_porcupine.py runs the real one."""
import json
import stat
import sys

import pytest

from bench.chaos import crosscheck, record
from bench.chaos.checker import Op
from bench.chaos.crosscheck import CrossCheckError, Verdict, agreement
from bench.chaos.history import (export_porcupine, history_from_porcupine,
                                 porcupine_operations)


def line(file, result="ok", ops=3, illegal=(), unknown=(), seconds=0.01):
    return json.dumps({"file": str(file), "ops": ops, "keys": 1, "unknown_ops": 0,
                       "result": result, "illegal_keys": list(illegal),
                       "unknown_keys": list(unknown), "seconds": seconds})


def fake_checker(tmp_path, stdout: str, status: int = 0):
    """An executable that prints `stdout` and exits with `status`, whatever its arguments."""
    script = tmp_path / "fake-porcupine"
    script.write_text(f"#!{sys.executable}\nimport sys\nsys.stdout.write({stdout!r})\n"
                      f"sys.exit({status})\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


STALE_READ = [     # b is acknowledged, then a read returns the older a: not linearizable
    Op(1, "/k", "write", "a", 0.0, 1.0, "ok", {"ok": True}),
    Op(1, "/k", "write", "b", 2.0, 3.0, "ok", {"ok": True}),
    Op(2, "/k", "read", None, 4.0, 5.0, "ok", {"ok": True, "value": "a"}),
    Op(3, "/j", "read", None, 4.0, 5.0, "ok", {"error": "NOT_FOUND"}),
]


def test_porcupine_lines_are_read_into_verdicts():
    text = line("a.json") + "\n\n" + line("b.json", "illegal", illegal=["/k"]) + "\n"
    v = crosscheck.parse_porcupine_output(text)
    assert v["a.json"] == Verdict("ok", 3, 0.01, [], [], "porcupine")
    assert v["b.json"].result == "illegal" and v["b.json"].illegal_keys == ["/k"]


@pytest.mark.parametrize("text, says", [
    ('{"file": "x.json", "error": "open x.json: no such file"}', "could not check x.json"),
    ("not json", "not a verdict"),
    ('{"file": "x.json", "result": "fine", "ops": 1, "seconds": 0, "illegal_keys": [], '
     '"unknown_keys": []}', "not a verdict"),
    ('{"file": "x.json", "result": "ok"}', "not a verdict"),
])
def test_what_is_not_a_verdict_is_an_error(text, says):
    with pytest.raises(CrossCheckError, match=says):
        crosscheck.parse_porcupine_output(text)


@pytest.mark.parametrize("ours, theirs, agree", [
    (("ok", []), ("ok", []), True),
    (("illegal", ["/k"]), ("illegal", ["/k"]), True),
    (("ok", []), ("illegal", ["/k"]), False),
    (("illegal", ["/k"]), ("ok", []), False),
    (("illegal", ["/k"]), ("illegal", ["/j"]), False),      # the same verdict, other keys
    (("unknown", []), ("illegal", ["/k"]), None),           # a search ran out of time
    (("ok", []), ("unknown", []), None),
])
def test_agreement(ours, theirs, agree):
    assert agreement(Verdict(ours[0], 1, 0, ours[1]), Verdict(theirs[0], 1, 0, theirs[1])) \
        is agree


def test_verdicts_and_seeds():
    assert [crosscheck.result_of(v) for v in (True, False, None)] == ["ok", "illegal", "unknown"]
    assert crosscheck.seed_of(crosscheck.RESULTS / "chaos-4201.porcupine.json") == "4201"
    assert crosscheck.seed_of(crosscheck.RESULTS / "mine.json") == "mine.json"


def test_without_a_checker_it_says_so_and_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(crosscheck.ENV_CHECKER, raising=False)
    assert crosscheck.main([str(tmp_path / "chaos-1.porcupine.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and crosscheck.ENV_CHECKER in err and "go build" in err
    not_executable = tmp_path / "porcupine"
    not_executable.write_text("")
    monkeypatch.setenv(crosscheck.ENV_CHECKER, str(not_executable))
    with pytest.raises(CrossCheckError, match="not an executable file"):
        crosscheck.require_checker()


def test_a_checker_that_fails_is_an_error(tmp_path):
    f = export_porcupine(STALE_READ, tmp_path / "chaos-7.porcupine.json")
    with pytest.raises(CrossCheckError, match="exit 3"):
        crosscheck.run_porcupine(fake_checker(tmp_path, line(f), 3), [f], 5)
    with pytest.raises(CrossCheckError, match="failed"):        # no verdict for the file
        crosscheck.run_porcupine(fake_checker(tmp_path, ""), [f], 5)


def test_the_exported_history_reads_back_as_the_one_checked():
    exported = json.loads(json.dumps(porcupine_operations(
        STALE_READ + [Op(4, "/k", "write", "c", 6.0, 6.5, "info", {"error": "UNAVAILABLE"}),
                      Op(5, "/k", "write", "d", 6.0, 6.5, "fail", {"error": "X"})])))
    back = history_from_porcupine(exported)
    assert [(o.process, o.key, o.f, o.value, o.status) for o in back] == \
        [(1, "/k", "write", "a", "ok"), (1, "/k", "write", "b", "ok"),
         (2, "/k", "read", None, "ok"), (3, "/j", "read", None, "ok"),
         (4, "/k", "write", "c", "info")]                     # the "fail" one was left out
    assert back[2].invoke == 4.0 and back[2].complete == 5.0 and back[4].complete is None
    assert back[2].output == {"ok": True, "value": "a"}
    with pytest.raises(ValueError, match="operation #0"):
        history_from_porcupine([{"ClientId": 1, "Call": 0}])


def test_ours_is_the_runs_recorded_verdict_or_checker_py_on_the_export(tmp_path):
    f = export_porcupine(STALE_READ, tmp_path / "chaos-7.porcupine.json")
    rechecked = crosscheck.our_verdict(f)
    assert (rechecked.result, rechecked.illegal_keys, rechecked.ops) == ("illegal", ["/k"], 4)
    assert rechecked.source == "checker.py on the export"
    (tmp_path / "chaos-7.json").write_text(json.dumps({"summary": {"linearizability": {
        "linearizable": True, "ops": 5, "seconds": 0.5, "violating_keys": [],
        "unknown_keys": []}}}))
    recorded = crosscheck.our_verdict(f)
    assert (recorded.result, recorded.ops, recorded.source) == \
        ("ok", 5, "recorded in chaos-7.json")


def test_a_disagreement_exits_1_and_shows_in_the_table(tmp_path, capsys):
    f = export_porcupine(STALE_READ, tmp_path / "chaos-7.porcupine.json")
    says_ok = fake_checker(tmp_path, line(f, "ok", ops=4) + "\n")
    assert crosscheck.main([str(f), "--checker", str(says_ok)]) == 1
    out = capsys.readouterr().out
    row = [r for r in out.splitlines() if r.startswith("| 7 ")][0]
    assert [c.strip() for c in row.strip("|").split("|")][:5] == \
        ["7", "4", "illegal", "ok", "NO"]
    agrees = fake_checker(tmp_path, line(f, "illegal", ops=4, illegal=["/k"]) + "\n", 1)
    assert crosscheck.main([str(f), "--checker", str(agrees), "--json"]) == 0
    rows = [json.loads(r) for r in capsys.readouterr().out.splitlines() if r.startswith("{")]
    assert rows[0]["agree"] is True and rows[0]["porcupine"]["illegal_keys"] == ["/k"]


def summary(seed, minutes):
    return {"seed": seed, "minutes": minutes, "fault_seconds": minutes * 60,
            "faults": {"kill_leader": 1}, "master_kills": 1, "whole_cluster_power_losses": 0,
            "operations": 10, "acknowledged": 10, "lost": 0, "linearizable": True,
            "full_redundancy_s": 1.0}


def test_a_campaign_cross_checks_every_kth_segment(tmp_path):
    path = tmp_path / "record.json"
    checked = []

    def cross_check(seed):
        checked.append(seed)
        return {"ours": "ok", "porcupine": "unknown" if seed == 102 else "ok",
                "agree": None if seed == 102 else True, "ops": 10, "porcupine_seconds": 0.1}

    assert record.campaign(0.5, 6, 100, lambda m, s: summary(s, m), path,
                           cross_check=cross_check, cross_check_every=2) == 0
    assert checked == [100, 102, 104]
    c = record.load(path)["campaigns"][0]
    assert "cross_check" not in c
    assert ["cross_check" in s for s in c["segments"]] == [True, False, True, False, True]
    assert record.load(path)["totals"]["cross_check"] == \
        {"segments": 3, "agree": 2, "disagree": 0, "inconclusive": 1, "errors": 0}


def test_porcupine_finding_a_violation_fails_the_campaign(tmp_path):
    path = tmp_path / "record.json"
    verdicts = iter([{"ours": "ok", "porcupine": "ok", "agree": True},
                     {"error": "porcupine could not check it"},
                     {"ours": "ok", "porcupine": "illegal", "agree": False}])
    assert record.campaign(1, 6, 5, lambda m, s: summary(s, m), path,
                           cross_check=lambda seed: next(verdicts), cross_check_every=1) == 1
    c = record.load(path)["campaigns"][0]
    assert c["failed"] and len(c["segments"]) == 3        # an error alone fails nothing
    assert record.load(path)["totals"]["cross_check"]["disagree"] == 1


def test_a_campaign_without_a_checker_records_why(tmp_path, capsys):
    path = tmp_path / "record.json"
    assert record.campaign(0.1, 6, 5, lambda m, s: summary(s, m), path) == 0
    assert record.load(path)["campaigns"][0]["cross_check"] == crosscheck.NOT_CONFIGURED
    assert capsys.readouterr().out.count(crosscheck.ENV_CHECKER) == 1
    record.campaign(0.1, 6, 5, lambda m, s: summary(s, m), path,
                    cross_check=lambda seed: {}, cross_check_every=0)
    assert "off" in record.load(path)["campaigns"][1]["cross_check"]


def test_the_runner_refuses_a_configured_checker_it_cannot_run(tmp_path, monkeypatch, capsys):
    from bench.chaos import runner
    monkeypatch.setenv(crosscheck.ENV_CHECKER, str(tmp_path / "missing"))
    monkeypatch.setattr(record, "campaign", lambda *a, **k: pytest.fail("campaign started"))
    assert runner.main(["--hours", "1"]) == 2
    assert "not an executable file" in capsys.readouterr().err


def test_a_segments_cross_check_is_what_the_record_keeps(tmp_path):
    f = export_porcupine(STALE_READ, tmp_path / "chaos-7.porcupine.json")
    says_illegal = fake_checker(tmp_path, line(f, "illegal", ops=4, illegal=["/k"]), 1)
    check = crosscheck.segment_cross_check(says_illegal, results=tmp_path)
    assert check(7) == {"ours": "illegal", "porcupine": "illegal", "agree": True, "ops": 4,
                        "porcupine_seconds": 0.01, "porcupine_illegal_keys": ["/k"]}
    failed = check(8)                   # no verdict for chaos-8: an error, recorded, not raised
    assert list(failed) == ["error"] and "failed" in failed["error"]
