"""Export a chaos history for an independent linearizability checker: porcupine's operations.

`export_porcupine` writes the linearizability history as JSON, one object per operation with
the fields of porcupine's `Operation` (ClientId, Input, Call, Output, Return; times in integer
nanoseconds since the run's start), so that a Go program can decode it straight into
`[]porcupine.Operation` and check it with porcupine's search against a model of the same file
semantics as bench/chaos/checker.py's FileKeyModel, partitioned by `Input.key`: that program is
bench/chaos/porcupine, and bench/chaos/crosscheck.py compares its verdicts with ours.

Operations whose outcome is unknown ("info") get `Output: {"unknown": true}` and a return time
after every other operation, so porcupine may linearize them anywhere after their call —
including at the very end, where their effect can no longer be observed, which is the same as
never happening. Operations known not to have happened ("fail") are left out.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from bench.chaos.checker import FAIL, INFO, OK, Op

NS = 1_000_000_000


def porcupine_operations(history: Iterable[Op]) -> list[dict]:
    ops = [op for op in history if op.status != FAIL]
    end = max((op.complete or op.invoke for op in ops), default=0.0)
    never = int((end + 3600) * NS)
    out = []
    for op in sorted(ops, key=lambda o: o.invoke):
        unknown = op.status == INFO or op.complete is None
        out.append({"ClientId": op.process,
                    "Input": {"key": op.key, "f": op.f, "value": op.value},
                    "Call": int(op.invoke * NS),
                    "Output": {"unknown": True} if unknown else op.output,
                    "Return": never if unknown else int(op.complete * NS)})
    return out


def export_porcupine(history: Iterable[Op], path: Path) -> Path:
    path.write_text(json.dumps(porcupine_operations(history)))
    return path


def history_from_porcupine(operations: Iterable[dict]) -> list[Op]:
    """The history an exported file stands for, as :class:`Op` records for checker.py: an
    operation with `Output {"unknown": true}` is "info" (no completion), any other is "ok".
    Raises ValueError (naming the operation) for a record that is not an exported operation."""
    history = []
    for i, o in enumerate(operations):
        try:
            inp, unknown = o["Input"], o["Output"] == {"unknown": True}
            history.append(Op(process=o["ClientId"], key=inp["key"], f=inp["f"],
                              value=inp.get("value"), invoke=o["Call"] / NS,
                              complete=None if unknown else o["Return"] / NS,
                              status=INFO if unknown else OK,
                              output=None if unknown else o["Output"]))
        except (KeyError, TypeError) as err:
            raise ValueError(f"operation #{i} is not an exported porcupine operation: "
                             f"{err!r} in {o!r:.200}") from None
    return history
