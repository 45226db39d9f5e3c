"""The real porcupine checker (bench/chaos/porcupine) on small hand-made histories: it must
find the violations checker.py finds, pass what checker.py passes, and treat unknown outcomes
the same way.

Needs the built binary in $GFS_PORCUPINE_CHECKER: building it fetches porcupine through the Go
module proxy (docs/chaos.md), which CI and this project's machines cannot reach, so there the
test is skipped and says why.
"""
import random
import subprocess

import pytest

from bench.chaos import crosscheck
from bench.chaos.checker import FileKeyModel, Op
from bench.chaos.history import export_porcupine

CHECKER = crosscheck.checker_path()
pytestmark = pytest.mark.skipif(
    CHECKER is None or not CHECKER.is_file(),
    reason=f"no porcupine checker: ${crosscheck.ENV_CHECKER} is unset or not a file (it is built "
           f"with the Go module proxy: cd bench/chaos/porcupine && go mod tidy && go build)")

OK, NOT_FOUND, EXISTS = {"ok": True}, {"error": "NOT_FOUND"}, {"error": "ALREADY_EXISTS"}
LOST = {"error": "UNAVAILABLE"}


def read(v):
    return {"ok": True, "value": v}


HISTORIES = {
    # name: (history, the keys that are not linearizable)
    "concurrent write and reads": ([
        Op(1, "/k", "write", "a", 0, 10, "ok", OK),
        Op(2, "/k", "read", None, 1, 2, "ok", NOT_FOUND),
        Op(3, "/k", "read", None, 3, 4, "ok", read("a")),
        Op(2, "/k", "read", None, 5, 6, "ok", read("a")),
    ], []),
    "stale read": ([
        Op(1, "/k", "write", "a", 0, 1, "ok", OK),
        Op(1, "/k", "write", "b", 2, 3, "ok", OK),
        Op(2, "/k", "read", None, 4, 5, "ok", read("a")),
        Op(3, "/j", "create", "x", 0, 1, "ok", OK),
    ], ["/k"]),
    "a read going back in time": ([        # both orders of the writes, but not both reads
        Op(1, "/k", "write", "a", 0, 10, "ok", OK),
        Op(2, "/k", "write", "b", 0, 10, "ok", OK),
        Op(3, "/k", "read", None, 1, 2, "ok", read("a")),
        Op(3, "/k", "read", None, 3, 4, "ok", read("b")),
        Op(3, "/k", "read", None, 5, 6, "ok", read("a")),
    ], ["/k"]),
    "create twice (apply_twice)": ([
        Op(1, "/k", "create", "a", 0, 1, "ok", EXISTS),
        Op(2, "/k", "read", None, 2, 3, "ok", NOT_FOUND),
    ], ["/k"]),
    "staged rename": ([
        Op(1, "/k", "write_tmp", "a", 0, 1, "ok", OK),
        Op(1, "/k", "rename", None, 2, 3, "ok", OK),
        Op(2, "/k", "read", None, 4, 5, "ok", read("a")),
        Op(2, "/k", "rename", None, 6, 7, "ok", NOT_FOUND),
        Op(3, "/k", "delete", None, 8, 9, "ok", OK),
        Op(3, "/k", "delete", None, 10, 11, "ok", NOT_FOUND),
    ], []),
    "a rename that finds nothing staged": ([
        Op(1, "/k", "write_tmp", "a", 0, 1, "ok", OK),
        Op(2, "/k", "rename", None, 2, 3, "ok", NOT_FOUND),
    ], ["/k"]),
    "an unknown write that took effect late": ([
        Op(1, "/k", "write", "a", 0, 1, "ok", OK),
        Op(2, "/k", "write", "b", 2, 3, "info", LOST),
        Op(3, "/k", "read", None, 4, 5, "ok", read("a")),
        Op(3, "/k", "read", None, 100, 101, "ok", read("b")),
    ], []),
    "an unknown write that never happened": ([
        Op(1, "/k", "write", "a", 0, 1, "ok", OK),
        Op(2, "/k", "delete", None, 2, 3, "info", LOST),
        Op(3, "/k", "read", None, 4, 5, "ok", read("a")),
    ], []),
    "an unknown write cannot come before its call": ([
        Op(3, "/k", "read", None, 0, 1, "ok", read("b")),
        Op(2, "/k", "write", "b", 2, 3, "info", LOST),
    ], ["/k"]),
    "a value nobody wrote": ([
        Op(1, "/k", "write", "a", 0, 1, "info", LOST),
        Op(2, "/k", "read", None, 2, 3, "ok", read("c")),
    ], ["/k"]),
    "a failed write is left out": ([
        Op(1, "/k", "write", "a", 0, 1, "fail", LOST),
        Op(2, "/k", "read", None, 2, 3, "ok", NOT_FOUND),
    ], []),
}


@pytest.mark.parametrize("name", sorted(HISTORIES))
def test_porcupine_and_checker_py_agree(name, tmp_path):
    history, illegal = HISTORIES[name]
    f = export_porcupine(history, tmp_path / "h.porcupine.json")
    [row] = crosscheck.cross_check([f], CHECKER, timeout=30)
    assert (row.porcupine.result, row.porcupine.illegal_keys) == \
        ("illegal" if illegal else "ok", illegal)
    assert row.agree is True, crosscheck.render([row])


def test_the_checker_exits_1_on_a_violation_and_2_on_a_bad_file(tmp_path):
    legal = export_porcupine(HISTORIES["staged rename"][0], tmp_path / "legal.json")
    illegal = export_porcupine(HISTORIES["stale read"][0], tmp_path / "illegal.json")
    bad = tmp_path / "bad.json"
    bad.write_text('[{"ClientId": 1, "Input": "write"}]')
    run = lambda *files: subprocess.run([str(CHECKER), *map(str, files)], capture_output=True,
                                        text=True)
    assert run(legal).returncode == 0
    assert run(legal, illegal).returncode == 1
    out = run(bad, legal)
    assert out.returncode == 2 and "Input is not an object" in out.stdout
    assert len(crosscheck.parse_porcupine_output(out.stdout.splitlines()[1])) == 1


def random_history(rng, keys=2, clients=4, n=24) -> list[Op]:
    """A history of the file model run one operation at a time at random instants inside the
    operations' intervals (so it is linearizable), some outcomes unknown (taking effect late
    or never), then, half the time, one read's answer changed (so it may not be)."""
    model, ops, events = FileKeyModel(), [], []
    for i in range(n):
        f = rng.choice(["write", "create", "write_tmp", "rename", "read", "delete"])
        invoke = rng.uniform(0, 20)
        complete = invoke + rng.uniform(0.1, 4)
        op = Op(rng.randrange(clients), f"/k{rng.randrange(keys)}", f,
                f"v{i}" if f in ("write", "create", "write_tmp") else None, invoke, complete,
                "ok", None)
        if rng.random() < 0.15:                       # unknown outcome: late, or never
            op.status, op.output = "info", LOST
            if rng.random() < 0.5:
                ops.append(op)
                continue
            events.append((rng.uniform(invoke, 40), op))
        else:
            events.append((rng.uniform(invoke, complete), op))
        ops.append(op)
    states: dict = {}
    for _, op in sorted(events, key=lambda e: e[0]):
        main, tmp = before = states.get(op.key, (None, None))
        after = model.step_unknown(before, op)
        if op.status == "ok":
            op.output = (read(main) if main is not None else NOT_FOUND) if op.f == "read" else \
                OK if after != before or op.f in ("write", "write_tmp") else \
                EXISTS if op.f == "create" else NOT_FOUND
        states[op.key] = after
    reads = [op for op in ops if op.f == "read" and op.status == "ok"]
    if reads and rng.random() < 0.5:
        rng.choice(reads).output = rng.choice([NOT_FOUND] + [read(f"v{i}") for i in range(n)])
    return ops


def test_random_histories_get_the_same_verdicts(tmp_path):
    rng = random.Random(20261202)
    files = [export_porcupine(random_history(rng), tmp_path / f"h{i}.porcupine.json")
             for i in range(300)]
    rows = crosscheck.cross_check(files, CHECKER, timeout=30)
    assert all(r.agree is True for r in rows), crosscheck.render([r for r in rows if not r.agree])
    verdicts = [r.porcupine.result for r in rows]
    assert verdicts.count("illegal") >= 60 and verdicts.count("ok") >= 60     # both were tried


def test_a_campaign_segment_is_cross_checked_from_its_results(tmp_path):
    export_porcupine(HISTORIES["a read going back in time"][0], tmp_path / "chaos-5.porcupine.json")
    check = crosscheck.segment_cross_check(CHECKER, results=tmp_path)
    x = check(5)
    assert (x["ours"], x["porcupine"], x["agree"], x["ops"]) == ("illegal", "illegal", True, 5)
