"""The chaos suite's linearizability checker: bench/chaos/checker.py."""
from __future__ import annotations

import functools
import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.chaos.checker import (CheckResult, FileKeyModel, Op, check, check_partitioned,
                                 summarise)

MODEL = FileKeyModel()
OK_OUT = {"ok": True}
NOT_FOUND = {"error": "NOT_FOUND"}
EXISTS = {"error": "ALREADY_EXISTS"}


# --- building histories by hand -------------------------------------------------------------

def op(p, f, t0, t1, value=None, output=None, status="ok", key="k"):
    if output is None and status == "ok":
        output = dict(OK_OUT)
    return Op(process=p, key=key, f=f, value=value, invoke=t0, complete=t1, status=status,
              output=output)


def write(p, v, t0, t1, **kw):
    return op(p, "write", t0, t1, value=v, **kw)


def write_tmp(p, v, t0, t1, **kw):
    return op(p, "write_tmp", t0, t1, value=v, **kw)


def create(p, v, t0, t1, won=True, **kw):
    return op(p, "create", t0, t1, value=v, output=None if won else dict(EXISTS), **kw)


def rename(p, t0, t1, found=True, **kw):
    return op(p, "rename", t0, t1, output=None if found else dict(NOT_FOUND), **kw)


def delete(p, t0, t1, found=True, **kw):
    return op(p, "delete", t0, t1, output=None if found else dict(NOT_FOUND), **kw)


def read(p, v, t0, t1, **kw):
    """A read returning v, or NOT_FOUND when v is None."""
    out = dict(NOT_FOUND) if v is None else {"ok": True, "value": v}
    return op(p, "read", t0, t1, output=out, **kw)


def info(o):
    o.status, o.output = "info", None
    return o


def verdict(history):
    return check(history, MODEL, max_seconds=10).linearizable


# --- known linearizable histories -----------------------------------------------------------

def test_empty_history_is_linearizable():
    r = check([], MODEL)
    assert r.linearizable is True and r.ops == 0


def test_sequential_history_of_every_op():
    h = [read(1, None, 0, 1), write(1, "a", 2, 3), read(2, "a", 4, 5),
         write_tmp(3, "b", 6, 7), read(1, "a", 8, 9), rename(2, 10, 11), read(1, "b", 12, 13),
         rename(3, 14, 15, found=False), delete(1, 16, 17), read(2, None, 18, 19),
         delete(3, 20, 21, found=False), create(1, "c", 22, 23), create(2, "d", 24, 25, won=False),
         read(3, "c", 26, 27)]
    r = check(h, MODEL)
    assert r.linearizable is True, r.detail
    assert r.key == "k" and r.ops == len(h) and r.explored >= len(h)
    assert "linearizable" in r.detail


@pytest.mark.parametrize("seen", ["a", "b"])
def test_read_overlapping_two_writes_may_return_either(seen):
    h = [write(1, "a", 0, 10), write(2, "b", 1, 9), read(3, seen, 2, 8)]
    assert verdict(h) is True


@pytest.mark.parametrize("first, second", [("a", "a"), ("b", "b"), ("b", "a"), ("a", "b")])
def test_reads_after_concurrent_writes_see_one_winner(first, second):
    h = [write(1, "a", 0, 10), write(2, "b", 1, 9), read(3, first, 11, 12),
         read(4, second, 13, 14)]
    # Either write may be last, but two later reads must agree on which.
    assert verdict(h) is (first == second)


def test_read_concurrent_with_write_may_see_old_or_new():
    base = [write(1, "a", 0, 1), write(2, "b", 2, 6)]
    assert verdict(base + [read(3, "a", 3, 4), read(4, "b", 5, 7)]) is True
    assert verdict(base + [read(3, "b", 3, 4), read(4, "a", 5, 7)]) is False  # not monotonic


def test_touching_intervals_count_as_concurrent():
    assert verdict([write(1, "a", 0, 1), read(2, None, 1, 2)]) is True
    assert verdict([write(1, "a", 0, 1), read(2, None, 1.001, 2)]) is False


def test_info_write_later_read_took_effect():
    h = [write(1, "a", 0, 1), info(write(2, "b", 2, 3)), read(3, "b", 5, 6), read(1, "b", 7, 8)]
    assert verdict(h) is True


def test_info_write_may_take_effect_long_after_its_timeout():
    h = [write(1, "a", 0, 1), info(write(2, "b", 2, 3)), read(3, "a", 5, 6),
         read(1, "b", 7, 8)]
    assert verdict(h) is True


def test_info_write_never_observed_did_not_take_effect():
    h = [write(1, "a", 0, 1), info(write(2, "b", 2, None)), read(3, "a", 5, 6),
         read(1, "a", 7, 8)]
    assert verdict(h) is True


def test_info_write_cannot_be_unseen_once_observed():
    h = [write(1, "a", 0, 1), info(write(2, "b", 2, 3)), read(3, "b", 5, 6), read(1, "a", 7, 8)]
    assert verdict(h) is False


def test_info_write_cannot_take_effect_before_its_invocation():
    h = [write(1, "a", 0, 1), read(3, "b", 2, 3), info(write(2, "b", 4, 5))]
    assert verdict(h) is False


def test_each_info_op_takes_effect_at_most_once():
    # Two reads of "x" with a delete between need two writes of "x".
    h = [info(write(1, "x", 0, 1)), read(2, "x", 2, 3), delete(2, 4, 5), read(2, "x", 6, 7)]
    assert verdict(h) is False
    h.insert(1, info(write(3, "x", 0.5, 1)))        # an identical second one
    assert verdict(h) is True
    # The same with values no read returns: two deletes need two creates.
    h = [info(create(1, "u1", 0, 1)), info(create(3, "u2", 0, 1)), delete(2, 2, 3),
         delete(2, 4, 5)]
    assert verdict(h) is True
    assert verdict(h[:1] + h[2:]) is False


def test_which_info_op_is_used_matters():
    # The first read can be explained by the info write or the info create, but only the
    # write can explain the second one (a create cannot overwrite "y"), so the create must be
    # the one used first -- even though the search tries the write first.
    h = [info(write(1, "x", 0, 1)), info(create(2, "x", 0.5, 1)), read(3, "x", 2, 3),
         write(3, "y", 4, 5), read(3, "x", 6, 7)]
    assert verdict(h) is True
    h[1] = info(write_tmp(2, "x", 0.5, 1))       # a staged "x" cannot be read at main
    assert verdict(h) is False


def test_fail_ops_are_dropped():
    h = [write(1, "a", 0, 1), op(2, "write", 2, 3, value="b", status="fail", output=None),
         read(3, "a", 4, 5)]
    r = check(h, MODEL)
    assert r.linearizable is True and r.ops == 3
    assert verdict([write(1, "a", 0, 1), op(2, "write", 2, 3, value="b", status="fail"),
                    read(3, "b", 4, 5)]) is False


def test_rename_read_interleavings():
    base = [write(1, "a", 0, 1), write_tmp(1, "b", 2, 3), rename(2, 4, 10)]
    assert verdict(base + [read(3, "a", 5, 6), read(4, "b", 7, 9), read(3, "b", 11, 12)]) is True
    assert verdict(base + [read(3, "a", 5, 6), read(4, "a", 7, 9), read(3, "b", 11, 12)]) is True
    assert verdict(base + [read(3, "b", 5, 6), read(4, "a", 7, 9)]) is False
    assert verdict(base + [read(3, "a", 11, 12)]) is False     # rename completed


def test_concurrent_renames_only_one_finds_the_tmp():
    base = [write_tmp(1, "x", 0, 1)]
    assert verdict(base + [rename(2, 2, 5), rename(3, 3, 6, found=False),
                           read(4, "x", 7, 8)]) is True
    assert verdict(base + [rename(2, 2, 5), rename(3, 3, 6)]) is False
    # A second write_tmp concurrent with both renames lets both succeed.
    assert verdict(base + [rename(2, 2, 5), write_tmp(4, "y", 2.5, 4), rename(3, 3, 6),
                           read(4, "y", 7, 8)]) is True


def test_info_rename_of_staged_value():
    h = [write(1, "a", 0, 1), write_tmp(1, "b", 2, 3), info(rename(2, 4, 5)), read(3, "b", 6, 7),
         rename(1, 8, 9, found=False)]
    assert verdict(h) is True
    h = [write(1, "a", 0, 1), write_tmp(1, "b", 2, 3), info(rename(2, 4, 5)), read(3, "a", 6, 7),
         rename(1, 8, 9)]
    assert verdict(h) is True


def test_create_race_exactly_one_wins():
    h = [create(1, "a", 0, 5, won=False), create(2, "b", 1, 4), create(3, "c", 2, 6, won=False),
         read(4, "b", 7, 8)]
    assert verdict(h) is True
    h[-1] = read(4, "a", 7, 8)
    assert verdict(h) is False      # a loser's value


def test_create_after_delete_can_win_again():
    h = [create(1, "a", 0, 1), delete(2, 2, 3), create(3, "b", 4, 5), read(1, "b", 6, 7)]
    assert verdict(h) is True


def test_info_create_may_have_won():
    h = [info(create(1, "a", 0, 1)), create(2, "b", 2, 3, won=False), read(3, "a", 4, 5)]
    assert verdict(h) is True
    h = [info(create(1, "a", 0, 1)), create(2, "b", 2, 3), read(3, "b", 4, 5)]
    assert verdict(h) is True


# --- known violations -----------------------------------------------------------------------

def test_stale_read_is_rejected_and_explained():
    h = [write(1, "a", 0, 1), write(2, "b", 2, 3), read(3, "a", 4, 5)]
    r = check(h, MODEL)
    assert r.linearizable is False
    assert "NOT linearizable" in r.detail
    assert "op #2:" in r.detail and "process 3 read" in r.detail
    assert "'value': 'a'" in r.detail and "invoke=4.000000" in r.detail
    assert "complete=5.000000" in r.detail
    assert "(<unread 'b'>, None)" in r.detail    # the only state reachable before it


def test_lost_write_is_rejected():
    h = [write(1, "a", 0, 1), read(2, "a", 1.5, 2), write(3, "b", 2.5, 3), read(2, "a", 4, 5),
         read(1, "a", 6, 7)]
    r = check(h, MODEL)
    assert r.linearizable is False
    assert "op #3:" in r.detail


def test_phantom_read_of_never_written_value_is_rejected():
    h = [write(1, "a", 0, 2), read(2, "zzz", 0.5, 1.5), write(3, "b", 1, 3)]
    r = check(h, MODEL)
    assert r.linearizable is False and "'zzz'" in r.detail


def test_read_of_only_staged_value_is_rejected():
    # A value in the tmp path is not visible at main until renamed.
    assert verdict([write_tmp(1, "t", 0, 1), read(2, "t", 2, 3)]) is False


@pytest.mark.parametrize("overlap", [False, True])
def test_two_creates_both_succeeding_is_rejected(overlap):
    h = ([create(1, "a", 0, 3), create(2, "b", 1, 2)] if overlap
         else [create(1, "a", 0, 1), create(2, "b", 2, 3)])
    assert verdict(h) is False


def test_not_found_after_completed_write_is_rejected():
    assert verdict([write(1, "a", 0, 1), read(2, None, 2, 3)]) is False
    assert verdict([write(1, "a", 0, 1), read(2, None, 0.5, 3)]) is True     # concurrent
    assert verdict([write(1, "a", 0, 1), delete(3, 2, 4), read(2, None, 3, 5)]) is True


def test_illegal_outputs_and_unknown_ops_are_reported():
    assert verdict([op(1, "write", 0, 1, value="a", output=dict(EXISTS))]) is False
    assert verdict([op(1, "write", 0, 1, value="a", output={"error": "UNAVAILABLE"})]) is False
    assert verdict([op(1, "read", 0, 1, output={"ok": True})]) is False       # no value
    assert verdict([op(1, "delete", 0, 1, output={"ok": True})]) is False     # nothing there
    r = check([op(1, "frobnicate", 0, 1, value="a")], MODEL)
    assert r.linearizable is False and "frobnicate" in r.detail
    # An unknown op with unknown outcome simply never took effect.
    assert verdict([info(op(1, "frobnicate", 0, 1, value="a")), read(2, None, 2, 3)]) is True


def test_malformed_histories_raise():
    with pytest.raises(ValueError, match="completion"):
        check([op(1, "write", 0, None, value="a")], MODEL)
    with pytest.raises(ValueError, match="before"):
        check([op(1, "write", 2, 1, value="a")], MODEL)
    with pytest.raises(ValueError, match="status"):
        check([op(1, "write", 0, 1, value="a", status="maybe")], MODEL)
    with pytest.raises(ValueError, match="keys"):
        check([write(1, "a", 0, 1, key="x"), write(1, "a", 0, 1, key="y")], MODEL)


# --- time budget ----------------------------------------------------------------------------

def test_out_of_time_is_unknown_never_true():
    # Refuting a late violation among many unknown outcomes takes far longer than 0.3 s.
    h = concurrent_history(1000, 10, seed=0, info_rate=0.03)
    victim = max(i for i, o in enumerate(h) if o.f == "read" and o.status == "ok")
    h[victim].output = {"ok": True, "value": "never-written"}
    t = time.monotonic()
    r = check(h, MODEL, max_seconds=0.3)
    assert time.monotonic() - t < 3
    assert r.linearizable is None
    assert "unknown" in r.detail and "NOT a pass" in r.detail
    assert r.explored > 0
    s = summarise([r])
    assert s["unknown"] == 1 and s["linearizable"] is None and s["linearizable"] is not True
    # A zero budget gives up on anything non-trivial.
    assert check([write(1, "a", 0, 1)], MODEL, max_seconds=0).linearizable is None


# --- partitioning and summaries -------------------------------------------------------------

def test_check_partitioned_reports_violations_per_key():
    good1 = [write(1, "a", 0, 1, key="k1"), read(2, "a", 2, 3, key="k1")]
    bad = [write(1, "a", 0, 1, key="k2"), write(2, "b", 2, 3, key="k2"),
           read(3, "a", 4, 5, key="k2")]
    good2 = [create(3, "x", 0, 1, key="k3"), create(4, "y", 0.5, 2, won=False, key="k3"),
             info(delete(5, 3, None, key="k3"))]
    # Interleave the keys; on one key alone each is fine or bad independently.
    history = [good1[0], bad[0], good2[0], good2[1], good1[1], bad[1], bad[2], good2[2]]
    results = check_partitioned(history, MODEL, max_seconds_per_key=5)
    assert [r.key for r in results] == ["k1", "k2", "k3"]
    by_key = {r.key: r for r in results}
    assert by_key["k1"].linearizable is True
    assert by_key["k2"].linearizable is False and "k2" in by_key["k2"].detail
    assert by_key["k3"].linearizable is True
    assert [r.ops for r in results] == [2, 3, 3]

    s = summarise(results)
    assert s["keys"] == 3 and s["ops"] == 8
    assert s["violations"] == 1 and s["unknown"] == 0
    assert s["linearizable"] is False and s["violating_keys"] == ["k2"]

    ok = summarise(check_partitioned(good1 + good2, MODEL))
    assert ok["keys"] == 2 and ok["ops"] == 5 and ok["violations"] == 0
    assert ok["linearizable"] is True


def test_summarise_needs_every_key_true():
    def res(v, key):
        return CheckResult(v, key, 1, 0.0, "", 2)
    assert summarise([])["linearizable"] is True
    assert summarise([res(True, "a"), res(True, "b")])["linearizable"] is True
    s = summarise([res(True, "a"), res(None, "b")])
    assert s["linearizable"] is None and s["unknown"] == 1 and s["unknown_keys"] == ["b"]
    s = summarise([res(False, "a"), res(None, "b"), res(True, "c")])
    assert s["linearizable"] is False and (s["violations"], s["unknown"], s["ops"]) == (1, 1, 6)


# --- generated histories --------------------------------------------------------------------

FS = ["write", "create", "write_tmp", "rename", "read", "delete"]


class RefFS:
    """A reference file system: a dict of paths, independent of FileKeyModel."""

    def __init__(self):
        self.files: dict[str, str] = {}

    def apply(self, f, value, path="/k"):
        tmp = path + ".tmp"
        if f in ("write", "write_tmp"):
            self.files[path if f == "write" else tmp] = value
            return {"ok": True}
        if f == "create":
            if path in self.files:
                return {"error": "ALREADY_EXISTS"}
            self.files[path] = value
            return {"ok": True}
        if f == "rename":
            if tmp not in self.files:
                return {"error": "NOT_FOUND"}
            self.files[path] = self.files.pop(tmp)
            return {"ok": True}
        if f == "read":
            return {"ok": True, "value": self.files[path]} if path in self.files else {
                "error": "NOT_FOUND"}
        if f == "delete":
            if path not in self.files:
                return {"error": "NOT_FOUND"}
            del self.files[path]
            return {"ok": True}
        raise AssertionError(f)


step_spec = st.tuples(
    st.sampled_from(FS),
    st.integers(0, 4),                                  # value
    st.floats(0, 25, allow_nan=False),                  # widen before
    st.floats(0, 25, allow_nan=False),                  # widen after
    st.sampled_from(["ok"] * 8 + ["info", "info", "fail"]),
    st.booleans(),                                      # an info op took effect
    st.booleans(),                                      # an info op has a completion time
)


def simulate(specs):
    """Run ops one at a time (op i takes effect at t = 10 i), then widen each interval around
    its instant: real-time order stays consistent with the simulation's order."""
    fs = RefFS()
    history = []
    for i, (f, v, before, after, status, took_effect, completes) in enumerate(specs):
        t = 10.0 * i
        value = f"v{v}" if f in ("write", "create", "write_tmp") else None
        if status == "ok" or (status == "info" and took_effect):
            output = fs.apply(f, value)
        else:
            output = None
        history.append(Op(process=i % 4, key="k", f=f, value=value, invoke=t - before,
                          complete=t + after if status != "info" or completes else None,
                          status=status, output=output if status == "ok" else None))
    return history


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step_spec, max_size=40))
def test_simulated_histories_are_linearizable(specs):
    h = simulate(specs)
    r = check(h, MODEL, max_seconds=10)
    assert r.linearizable is True, r.detail


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step_spec, max_size=40), st.data())
def test_phantom_read_in_simulated_history_is_caught(specs, data):
    h = simulate(specs)
    reads = [i for i, o in enumerate(h) if o.f == "read" and o.status == "ok"]
    if not reads:   # make sure there is an acknowledged read to corrupt
        h.append(Op(process=9, key="k", f="read", value=None, invoke=10.0 * len(h),
                    complete=10.0 * len(h) + 1, status="ok", output={"error": "NOT_FOUND"}))
        reads = [len(h) - 1]
    victim = data.draw(st.sampled_from(reads))
    h[victim].output = {"ok": True, "value": "never-written"}
    r = check(h, MODEL, max_seconds=10)
    assert r.linearizable is False
    assert f"op #{victim}:" in r.detail


# --- cross-check against brute force on small arbitrary histories ---------------------------

def brute_force(history, model):
    """Try every order of every subset (info ops optional) that respects real time."""
    live = tuple(o for o in history if o.status != "fail")

    @functools.lru_cache(maxsize=None)
    def search(remaining: frozenset, state) -> bool:
        if not any(live[i].status == "ok" for i in remaining):
            return True
        for i in remaining:
            o = live[i]
            if any(live[j].status == "ok" and live[j].complete < o.invoke
                   for j in remaining if j != i):
                continue            # something that must precede it is still waiting
            if o.status == "info":
                new = model.step_unknown(state, o)
                if new is None:
                    continue
            else:
                legal, new = model.step(state, o)
                if not legal:
                    continue
            if search(remaining - {i}, new):
                return True
        return False

    return search(frozenset(range(len(live))), model.init())


OUTPUTS = [{"ok": True}, {"ok": True}, {"error": "NOT_FOUND"}, {"error": "ALREADY_EXISTS"},
           {"ok": True, "value": "v0"}, {"ok": True, "value": "v1"}]

arbitrary_op = st.builds(
    lambda p, f, v, t0, d, status, out: Op(
        process=p, key="k", f=f, value=f"v{v}", invoke=float(t0),
        complete=None if status == "info" and d == 0 else float(t0 + d), status=status,
        output=out if status == "ok" else None),
    st.integers(0, 3), st.sampled_from(FS), st.integers(0, 1), st.integers(0, 6),
    st.integers(0, 4), st.sampled_from(["ok", "ok", "ok", "info", "fail"]),
    st.sampled_from(OUTPUTS))


@settings(max_examples=300, deadline=None)
@given(st.lists(arbitrary_op, max_size=7))
def test_agrees_with_brute_force_on_small_histories(history):
    assert check(history, MODEL, max_seconds=10).linearizable is brute_force(history, MODEL)


info_heavy_op = st.builds(
    lambda p, f, v, t0, d, status, out: Op(
        process=p, key="k", f=f, value=f"v{v}", invoke=float(t0), complete=float(t0 + d),
        status=status, output=out if status == "ok" else None),
    st.integers(0, 3), st.sampled_from(FS), st.integers(0, 2), st.integers(0, 6),
    st.integers(0, 3), st.sampled_from(["ok", "info", "info"]),
    st.sampled_from(OUTPUTS + [{"ok": True, "value": "v2"}]))


@settings(max_examples=300, deadline=None)
@given(st.lists(info_heavy_op, min_size=3, max_size=7))
def test_agrees_with_brute_force_when_most_outcomes_are_unknown(history):
    assert check(history, MODEL, max_seconds=10).linearizable is brute_force(history, MODEL)


# --- performance ----------------------------------------------------------------------------

def concurrent_history(n_ops, processes, seed, info_rate=0.0):
    """Each process runs ops back to back; every op takes effect at a random instant within
    its interval and outputs come from applying them to RefFS in that order."""
    rng = random.Random(seed)
    clocks = [rng.uniform(0, 1) for _ in range(processes)]
    planned = []
    for i in range(n_ops):
        p = i % processes
        t0 = clocks[p]
        t1 = t0 + rng.expovariate(1.0) + 0.01
        clocks[p] = t1 + rng.uniform(0, 0.2)
        f = rng.choices(FS, weights=[4, 1, 2, 2, 6, 1])[0]
        value = f"{p}-{i}" if f in ("write", "create", "write_tmp") else None
        status = "info" if rng.random() < info_rate else "ok"
        took_effect = status == "ok" or rng.random() < 0.5
        planned.append((rng.uniform(t0, t1), took_effect,
                        Op(p, "k", f, value, t0, t1, status, None)))
    fs = RefFS()
    for _, took_effect, o in sorted(planned, key=lambda x: x[0]):
        if took_effect:
            out = fs.apply(o.f, o.value)
            if o.status == "ok":
                o.output = out
    return [o for _, _, o in planned]


def test_two_thousand_ops_ten_processes_stay_a_small_search():
    """The search's work, not its time (a loaded machine makes any time limit flaky): 2,000
    operations of 10 processes take about 84,000 states (~42 per operation, a few seconds);
    a pruning that stopped working would take exponentially more."""
    h = concurrent_history(2000, 10, seed=7)
    r = check(h, MODEL, max_seconds=120)
    assert r.linearizable is True, r.detail
    assert r.explored < 100 * len(h), f"explored {r.explored} states for {len(h)} operations"


def test_concurrent_history_with_unknown_outcomes_and_a_corruption():
    h = concurrent_history(1000, 10, seed=4, info_rate=0.03)
    assert sum(o.status == "info" for o in h) >= 20
    r = check(h, MODEL, max_seconds=30)
    assert r.linearizable is True, r.detail
    # Corrupt an early read: the search cannot get past it, so refuting stays cheap.
    victim = min(i for i, o in enumerate(h) if o.f == "read" and o.status == "ok" and i >= 150)
    h[victim].output = {"ok": True, "value": "never-written"}
    r = check(h, MODEL, max_seconds=30)
    assert r.linearizable is False and f"op #{victim}:" in r.detail
