"""Linearizability checking for the chaos suite's recorded histories.

A history is a list of :class:`Op` records, one per client call: when it was invoked, when (if
ever) its response arrived, and what the response was.  The history of one key is
*linearizable* with respect to a sequential :class:`Model` if every operation can be given a
single instant ("linearization point") between its invocation and its response such that
executing the operations one at a time in that order, against the model, produces exactly the
responses that were observed.  Operations whose outcome is unknown ("info": timeouts, lost
connections, crashes) may take effect at any instant after their invocation -- even long after
the client gave up -- or not at all.  Operations known not to have happened ("fail") are
ignored.

The search (:func:`check`) is Wing & Gong's algorithm with Lowe's improvements, the same
scheme as the "porcupine" checker and Knossos' "linear"/WGL checkers:

* Every operation contributes a *call* entry at its invocation time and a *return* entry at its
  completion time; all entries are sorted by time and kept in a doubly linked list.  An "info"
  operation has no return entry (its completion is +infinity), so it never forces anything.
* The search walks the list from the front.  At a call entry it tries to linearize that
  operation *now*: if the model accepts it in the current state, both of its entries are
  unlinked from the list ("lifted"), the choice is pushed on an explicit stack, and the walk
  restarts at the front.  Otherwise it moves on to the next entry, i.e. it tries another
  operation that is concurrent with everything before it.
* Reaching a return entry means that operation had to be linearized already and no remaining
  candidate could make progress, so the last choice is undone (popped, its entries relinked
  in O(1)), and the walk continues after the entry that was undone.
* Reaching the end of the list means every operation with a known outcome has been linearized
  (any "info" operations left over simply never took effect): the history is linearizable.
  Running out of choices at the root means it is not.
* Lowe's memoisation: a configuration is the pair (set of linearized operations as a bitset,
  model state).  What can still happen from a configuration depends on nothing else, so a
  configuration that was already explored is never explored again.  This makes the search
  polynomial for the usual small numbers of concurrent operations.
* Sound reductions for "info" operations, whose alternative is to never take effect:
  - linearizing one that leaves the state unchanged is never needed;
  - dominance: a configuration fails if one with the same "ok" operations and state but a
    subset of its "info" operations has already failed (leaving an "info" operation out is
    always at least as good as having used it);
  - symmetry: "info" operations that the model says have identical effects
    (:meth:`Model.effect_key`) are interchangeable, so only the earliest unused one of each
    kind is ever tried, and the "info" part of a configuration is in effect a count per kind.
  Models can add their own symmetry reduction in :meth:`Model.prepare` (FileKeyModel merges
  all values no read ever returned).

Cost: the number of configurations grows with concurrency and, above all, with the number of
"info" operations still pending (they never return, so they stay candidates forever).  Finding
a linearization of a correct history is usually quick; proving that none exists for a long
history with many unknown outcomes can take exponential time, in which case the verdict is
None (unknown) once ``max_seconds`` runs out -- never True.

Ties in time count as concurrency (a call at the same instant as another operation's return
is treated as overlapping it), which can only make the checker more lenient, never raise a
false alarm.

Histories of different keys are independent (linearizability is compositional), so
:func:`check_partitioned` checks each key on its own and :func:`summarise` aggregates.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Hashable, Iterable, Sequence

__all__ = ["Op", "Model", "CheckResult", "FileKeyModel", "Unread", "check",
           "check_partitioned", "summarise", "OK", "FAIL", "INFO"]

State = Hashable

OK = "ok"
FAIL = "fail"
INFO = "info"
_STATUSES = (OK, FAIL, INFO)

#: How many model states at the point where the search got stuck are kept for the report.
_MAX_STUCK_STATES = 8
#: How many ops of each kind (linearized before / still pending) the report lists.
_MAX_LISTED_OPS = 8


@dataclass
class Op:
    """One client operation as recorded by the workload.

    ``status`` is "ok" when a definite response arrived (a definite *error answer* such as
    NOT_FOUND is still "ok", with the error in ``output``), "fail" when the operation
    definitely did not take effect, and "info" when its outcome is unknown.
    """

    process: int
    key: str
    f: str
    value: Any
    invoke: float
    complete: float | None
    status: str
    output: Any = None

    def describe(self) -> str:
        """A one-line human-readable rendering of the operation."""
        if self.status == OK:
            out = repr(self.output)
        elif self.status == INFO:
            out = "unknown (info)"
        else:
            out = "did not happen (fail)"
        done = "never" if self.complete is None else f"{self.complete:.6f}"
        return (f"process {self.process} {self.f}({self.value!r}) -> {out} "
                f"[invoke={self.invoke:.6f}, complete={done}]")


class Model(ABC):
    """A sequential specification of one key.

    States must be hashable and compare by value: the checker memoises on them.
    """

    @abstractmethod
    def init(self) -> State:
        """The state before any operation."""

    @abstractmethod
    def step(self, state: State, op: Op) -> tuple[bool, State]:
        """Is ``op`` (with its recorded ``output``) legal in ``state``, and the state after it.

        The returned state is ignored when the op is illegal.
        """

    @abstractmethod
    def step_unknown(self, state: State, op: Op) -> State | None:
        """The state after ``op`` took effect in ``state`` with whatever output it would have
        had there (used for "info" ops, whose output was never seen); None if the op cannot
        take effect in ``state`` at all.
        """

    def effect_key(self, op: Op) -> Hashable | None:
        """For symmetry reduction of "info" ops: ops with equal, non-None keys must have the
        same effect in every state (``step_unknown`` gives the same result), so the checker
        only ever linearizes the earliest still-pending one of them.  Default None: none.
        """
        return None

    def prepare(self, ops: Sequence[Op]) -> Model:
        """A model specialised to one key's history (the ops the search will use), called by
        :func:`check` before searching.  Models may use it for symmetry reduction, e.g. to
        merge states that no op in the history can tell apart; the default is ``self``.
        """
        return self


@dataclass
class CheckResult:
    """The verdict for one key.

    ``linearizable`` is True (a valid linearization exists), False (none exists; ``detail``
    says where the search got stuck) or None (the time budget ran out: unknown, *not* a pass).
    ``explored`` counts distinct (linearized-set, state) configurations visited; ``ops`` is the
    number of operations in the key's history, "fail" ones included.
    """

    linearizable: bool | None
    key: str
    explored: int
    seconds: float
    detail: str
    ops: int = 0


# --------------------------------------------------------------------------------------------
# The search


def _validate(op: Op, index: int) -> None:
    if op.status not in _STATUSES:
        raise ValueError(f"op #{index}: status must be one of {_STATUSES}, not {op.status!r}")
    if op.status == OK:
        if op.complete is None:
            raise ValueError(f"op #{index}: status 'ok' needs a completion time")
        if op.complete < op.invoke:
            raise ValueError(f"op #{index}: completes ({op.complete}) before it is invoked "
                             f"({op.invoke})")


class _Stuck:
    """Where the search got furthest before failing: the return entry it could not pass."""

    def __init__(self) -> None:
        self.position = -1          # index of the blocking return entry in time order
        self.op = -1                # index (into the caller's list) of the blocked op
        self.depth = 0              # ops linearized when it was first reached
        self.prefix: list[int] = []  # the last ops linearized on that path
        self.pending: list[int] = []  # ops invoked before it completed, not yet linearized
        self.states: list[State] = []
        self.more_states = False

    def render(self, ops: Sequence[Op], final: bool) -> str:
        """Explain the blocking op; ``final`` when the search is complete (a violation)."""
        if self.op < 0:
            return ""
        blocked = ops[self.op]
        states = ", ".join(repr(s) for s in self.states) + (", ..." if self.more_states else "")
        if final:
            lines = [
                f"the search got stuck at op #{self.op}: {blocked.describe()}",
                f"  it had to take effect by t={blocked.complete:.6f}, but it is illegal in "
                f"every state reachable by a valid order of the operations that could precede "
                f"it, so the history up to that instant cannot be linearized",
                f"  reachable states just before it: {states}",
            ]
        else:
            lines = [
                f"the furthest the search got was op #{self.op}: {blocked.describe()}",
                f"  it was illegal in the states tried there so far: {states}",
            ]
        if self.prefix:
            shown = self.prefix[-_MAX_LISTED_OPS:]
            lines.append(f"  one such order linearized {self.depth} ops, ending with:")
            lines.extend(f"    #{i}: {ops[i].describe()}" for i in shown)
        others = [i for i in self.pending if i != self.op]
        if others:
            lines.append("  other pending ops that could have come before it (all were tried):")
            lines.extend(f"    #{i}: {ops[i].describe()}" for i in others[:_MAX_LISTED_OPS])
            if len(others) > _MAX_LISTED_OPS:
                lines.append(f"    ... and {len(others) - _MAX_LISTED_OPS} more")
        return "\n".join(lines)


def check(ops: list[Op], model: Model, max_seconds: float = 30.0) -> CheckResult:
    """Check one key's history for linearizability against ``model``.

    "fail" ops are dropped; "info" ops may be linearized anywhere after their invocation or
    not at all; "ok" ops must be linearized between invocation and completion.  Gives up after
    ``max_seconds`` with ``linearizable=None``.  Raises ValueError for malformed histories
    (unknown status, an "ok" op without a completion or completing before it starts, ops of
    more than one key).
    """
    started = time.monotonic()
    deadline = started + max_seconds
    ops = list(ops)
    keys = {op.key for op in ops}
    if len(keys) > 1:
        raise ValueError(f"check() takes one key's history; got keys {sorted(keys)!r} "
                         f"(use check_partitioned)")
    key = ops[0].key if ops else ""
    for i, op in enumerate(ops):
        _validate(op, i)

    # Ops taking part in the search, by their index in `ops`.
    live = [i for i, op in enumerate(ops) if op.status != FAIL]
    n = len(live)
    n_info = sum(1 for i in live if ops[i].status == INFO)

    def result(verdict: bool | None, explored: int, detail: str) -> CheckResult:
        return CheckResult(verdict, key, explored, time.monotonic() - started, detail, len(ops))

    # Entries in time order: (time, kind, j) with kind 0 = call, 1 = return; calls sort first
    # at equal times, so touching intervals count as concurrent.  j indexes `live`.
    events: list[tuple[float, int, int]] = []
    for j, i in enumerate(live):
        op = ops[i]
        events.append((op.invoke, 0, j))
        if op.status == OK:
            events.append((float(op.complete), 1, j))  # type: ignore[arg-type]
    events.sort()

    # The doubly linked list over entries 1..m with sentinels 0 (head) and m + 1 (tail).
    m = len(events)
    tail = m + 1
    nxt = list(range(1, m + 2)) + [tail]
    prv = [0] + list(range(0, m + 1))
    entry_op = [-1] * (m + 2)       # entry -> j
    is_call = [False] * (m + 2)
    return_of = [-1] * (m + 2)      # call entry -> its return entry, -1 for "info" ops
    call_of = [0] * n               # j -> its call entry
    for pos, (_, kind, j) in enumerate(events, start=1):
        entry_op[pos] = j
        if kind == 0:
            is_call[pos] = True
            call_of[j] = pos
        else:
            return_of[call_of[j]] = pos
    is_info = [ops[i].status == INFO for i in live]
    bit = [1 << j for j in range(n)]

    ok_mask = 0
    for j in range(n):
        if not is_info[j]:
            ok_mask |= bit[j]
    use_dominance = n_info > 0
    live_ops = [ops[i] for i in live]
    model = model.prepare(live_ops)
    step, step_unknown = model.step, model.step_unknown
    # Interchangeable "info" ops: each may only be linearized after the previous one of its
    # kind (by invocation), so the "info" part of a configuration is just a count per kind.
    prev_same = [-1] * n
    last_of_kind: dict[Hashable, int] = {}
    for _, kind, j in events:
        if kind == 0 and is_info[j]:
            effect = model.effect_key(live_ops[j])
            if effect is not None:
                prev_same[j] = last_of_kind.get(effect, -1)
                last_of_kind[effect] = j

    state: State = model.init()
    bits = 0
    cache: set[tuple[int, State]] = {(bits, state)}
    # Failed configurations, for dominance: (ok bits, state) -> info bitsets (an antichain).
    failed: dict[tuple[int, State], list[int]] = {}
    stack: list[tuple[int, State]] = []   # (call entry lifted, state before it)
    stuck = _Stuck()
    iterations = 0
    entry = nxt[0]

    while True:
        if entry == tail:
            return result(True, len(cache),
                          f"linearizable: {n} ops checked ({n_info} info, "
                          f"{len(ops) - n} fail dropped), explored {len(cache)} configurations")
        if not iterations & 1023 and time.monotonic() >= deadline:
            where = stuck.render(ops, final=False)
            return result(None, len(cache),
                          f"unknown: gave up after {time.monotonic() - started:.1f} s "
                          f"(limit {max_seconds:g} s) having explored {len(cache)} "
                          f"configurations of {n} ops; this is NOT a pass"
                          + (f"\nfurthest point reached so far:\n{where}" if where else ""))
        iterations += 1

        if is_call[entry]:
            j = entry_op[entry]
            if is_info[j]:
                twin = prev_same[j]
                if twin >= 0 and not bits & bit[twin]:
                    entry = nxt[entry]      # an identical earlier op is still pending
                    continue
                new_state = step_unknown(state, live_ops[j])
                legal = new_state is not None and new_state != state
            else:
                legal, new_state = step(state, live_ops[j])
            if legal:
                new_bits = bits | bit[j]
                seen = len(cache)
                cache.add((new_bits, new_state))    # (a dominated configuration fails too)
                if len(cache) != seen and not (
                        use_dominance and _dominated(failed, new_bits, ok_mask, new_state)):
                    stack.append((entry, state))
                    state, bits = new_state, new_bits
                    # lift: unlink the call entry and its return entry
                    p, q = prv[entry], nxt[entry]
                    nxt[p] = q
                    prv[q] = p
                    r = return_of[entry]
                    if r >= 0:
                        p, q = prv[r], nxt[r]
                        nxt[p] = q
                        prv[q] = p
                    entry = nxt[0]
                    continue
            entry = nxt[entry]
            continue

        # A return entry: its op is not linearized and nothing tried so far can come first.
        if entry > stuck.position:
            stuck.position = entry
            stuck.op = live[entry_op[entry]]
            stuck.depth = len(stack)
            stuck.prefix = [live[entry_op[e]] for e, _ in stack[-_MAX_LISTED_OPS:]]
            stuck.pending = []
            e = nxt[0]
            while e != entry:
                stuck.pending.append(live[entry_op[e]])
                e = nxt[e]
            stuck.states = [state]
            stuck.more_states = False
        elif entry == stuck.position and state not in stuck.states:
            if len(stuck.states) < _MAX_STUCK_STATES:
                stuck.states.append(state)
            else:
                stuck.more_states = True
        if not stack:
            return result(False, len(cache),
                          f"NOT linearizable (key {key!r}, {n} ops, explored {len(cache)} "
                          f"configurations): {stuck.render(ops, final=True)}")
        if use_dominance:
            _record_failure(failed, bits, ok_mask, state)
        entry, state = stack.pop()
        bits ^= bit[entry_op[entry]]
        # unlift: relink what lift unlinked, in reverse order
        r = return_of[entry]
        if r >= 0:
            nxt[prv[r]] = r
            prv[nxt[r]] = r
        nxt[prv[entry]] = entry
        prv[nxt[entry]] = entry
        entry = nxt[entry]


def _dominated(failed: dict[tuple[int, State], list[int]], bits: int, ok_mask: int,
               state: State) -> bool:
    """Has a configuration with the same "ok" ops and state, and a subset of these "info"
    ops, already failed?  Then this one fails too: "info" ops may be left out, so having
    fewer of them linearized never leaves fewer ways to finish."""
    masks = failed.get((bits & ok_mask, state))
    if masks:
        for m in masks:
            if not m & ~bits:
                return True
    return False


def _record_failure(failed: dict[tuple[int, State], list[int]], bits: int, ok_mask: int,
                    state: State) -> None:
    """Remember a fully explored, failed configuration (only minimal info sets are kept)."""
    info_bits = bits & ~ok_mask
    slot = (bits & ok_mask, state)
    masks = failed.get(slot)
    if masks is None:
        failed[slot] = [info_bits]
    else:
        masks[:] = [m for m in masks if info_bits & ~m]
        masks.append(info_bits)


def check_partitioned(ops: Iterable[Op], model: Model,
                      max_seconds_per_key: float = 30.0) -> list[CheckResult]:
    """Check each key's sub-history independently, in order of first appearance."""
    groups: dict[str, list[Op]] = {}
    for op in ops:
        groups.setdefault(op.key, []).append(op)
    return [check(group, model, max_seconds_per_key) for group in groups.values()]


def summarise(results: Sequence[CheckResult]) -> dict:
    """Aggregate per-key results.

    ``linearizable`` is True only if every key is True; False if any key has a violation;
    otherwise None (some key is unknown).
    """
    violations = [r.key for r in results if r.linearizable is False]
    unknown = [r.key for r in results if r.linearizable is None]
    if violations:
        verdict: bool | None = False
    elif unknown:
        verdict = None
    else:
        verdict = True
    return {
        "keys": len(results),
        "ops": sum(r.ops for r in results),
        "violations": len(violations),
        "unknown": len(unknown),
        "linearizable": verdict,
        "violating_keys": violations,
        "unknown_keys": unknown,
        "explored": sum(r.explored for r in results),
        "seconds": sum(r.seconds for r in results),
    }


# --------------------------------------------------------------------------------------------
# The gfs chaos workload's model


def _is_success(output: Any) -> bool:
    return isinstance(output, dict) and output.get("ok") is True and "error" not in output


def _is_error(output: Any, code: str) -> bool:
    return isinstance(output, dict) and output.get("error") == code and not output.get("ok")


class Unread:
    """A stored value that no acknowledged read in the history returned.

    All such values behave identically (nothing can tell them apart), so they compare equal
    to each other and the search treats them as one; the wrapped value is kept only to make
    reports readable.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Unread)

    def __hash__(self) -> int:
        return 0x5EED

    def __repr__(self) -> str:
        return f"<unread {self.value!r}>"


class FileKeyModel(Model):
    """One key = a file path P plus its staging path P + ".tmp".

    The state is ``(main, tmp)``, each None (absent) or the value stored there (values must be
    hashable and never None).  Ops and their legal outputs:

    * write      -- put at main, overwriting: {"ok": True} -> (value, tmp)
    * create     -- put at main, no overwrite: {"ok": True} if main is absent -> (value, tmp);
                    {"error": "ALREADY_EXISTS"} if present -> unchanged
    * write_tmp  -- put at tmp, overwriting: {"ok": True} -> (main, value)
    * rename     -- tmp -> main, overwriting: {"ok": True} if tmp present -> (tmp, None);
                    {"error": "NOT_FOUND"} if absent -> unchanged
    * read       -- {"ok": True, "value": v} iff main == v; {"error": "NOT_FOUND"} iff absent
    * delete     -- {"ok": True} if main present -> (None, tmp);
                    {"error": "NOT_FOUND"} if absent -> unchanged

    Extra fields in a successful output are ignored; any other output or op name is illegal.
    An "info" op takes the effect that is legal in the state where it is linearized (or none).

    Symmetry reduction: stored values matter only through reads that return them, so
    :meth:`prepare` gives a model in which every value that no acknowledged read returned is
    stored wrapped in :class:`Unread` (shown as ``<unread 'v'>`` in reports), and all of those
    compare equal.  States that differ only in such values behave identically, so merging
    them keeps verdicts exact and makes the search space far smaller.
    """

    def __init__(self, observed: frozenset | None = None) -> None:
        #: Values some acknowledged read returned; None means "keep every value as is".
        self.observed = observed

    def prepare(self, ops: Sequence[Op]) -> FileKeyModel:
        observed = set()
        for op in ops:
            if op.f == "read" and op.status == OK and _is_success(op.output) \
                    and "value" in op.output:
                try:
                    observed.add(op.output["value"])
                except TypeError:       # unhashable: no reduction, compare values as they are
                    return FileKeyModel()
        return FileKeyModel(frozenset(observed))

    def effect_key(self, op: Op) -> Hashable | None:
        if op.f in ("write", "create", "write_tmp"):
            return (op.f, self._stored(op.value))
        if op.f in ("rename", "delete", "read"):
            return (op.f,)
        return None

    def _stored(self, value: Any) -> Any:
        if self.observed is None or value is None or value in self.observed:
            return value
        return Unread(value)

    def init(self) -> State:
        return (None, None)

    def step(self, state: State, op: Op) -> tuple[bool, State]:
        main, tmp = state  # type: ignore[misc]
        out, f = op.output, op.f
        ok = _is_success(out)
        if f == "write":
            return (True, (self._stored(op.value), tmp)) if ok else (False, state)
        if f == "create":
            if ok:
                return (main is None), (self._stored(op.value), tmp)
            return (main is not None and _is_error(out, "ALREADY_EXISTS")), state
        if f == "write_tmp":
            return (True, (main, self._stored(op.value))) if ok else (False, state)
        if f == "rename":
            if ok:
                return (tmp is not None), (tmp, None)
            return (tmp is None and _is_error(out, "NOT_FOUND")), state
        if f == "read":
            if ok:
                return (main is not None and not isinstance(main, Unread) and "value" in out
                        and out["value"] == main), state
            return (main is None and _is_error(out, "NOT_FOUND")), state
        if f == "delete":
            if ok:
                return (main is not None), (None, tmp)
            return (main is None and _is_error(out, "NOT_FOUND")), state
        return False, state

    def step_unknown(self, state: State, op: Op) -> State | None:
        main, tmp = state  # type: ignore[misc]
        f = op.f
        if f == "write":
            return (self._stored(op.value), tmp)
        if f == "create":
            return (self._stored(op.value), tmp) if main is None else state
        if f == "write_tmp":
            return (main, self._stored(op.value))
        if f == "rename":
            return (tmp, None) if tmp is not None else state
        if f == "read":
            return state
        if f == "delete":
            return (None, tmp) if main is not None else state
        return None     # an unknown op name cannot take effect
