"""Cross-check chaos histories with an independent linearizability checker: porcupine.

    python -m bench.chaos.crosscheck [--checker PATH] [--timeout 60] FILE.porcupine.json...

Runs the Go program of bench/chaos/porcupine (porcupine's search over the same file model as
checker.py's FileKeyModel; built with `cd bench/chaos/porcupine && go mod tidy && go build`,
see docs/chaos.md) on each exported history and compares its verdict with ours: the one the
run recorded in the chaos-SEED.json beside the file, or, where there is none, checker.py run
again on the exported history itself. Prints a table (seed, ops, ours, porcupine, agree).

The checker is `--checker PATH` or the environment's GFS_PORCUPINE_CHECKER; without one it
says so and exits 2. Exit status 1 when the two checkers disagree, 2 when the cross-check
could not run (no checker, a file it could not read), else 0 — also when both find a
violation: the cross-check judges the judges, a run's own verdict is the run's business.

Verdicts are "ok", "illegal" or "unknown" (a search ran out of time: not a pass). Two
verdicts agree when they are the same and, for "illegal", name the same keys; a pair with an
"unknown" in it is inconclusive (agree None), never a disagreement.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from bench.chaos.checker import FileKeyModel, check_partitioned, summarise
from bench.chaos.history import history_from_porcupine
from bench.common import table

ENV_CHECKER = "GFS_PORCUPINE_CHECKER"
RESULTS = Path(__file__).resolve().parent.parent / "results"
RESULTS_KINDS = ("ok", "illegal", "unknown")
NOT_CONFIGURED = (f"porcupine cross-check not configured: set {ENV_CHECKER} to the binary built "
                  f"by `cd bench/chaos/porcupine && go mod tidy && go build` (docs/chaos.md)")


class CrossCheckError(Exception):
    """The cross-check could not run (no checker, a checker that failed, a bad file)."""


@dataclass
class Verdict:
    """One checker's verdict on one history."""

    result: str                    # "ok" | "illegal" | "unknown"
    ops: int
    seconds: float
    illegal_keys: list[str] = field(default_factory=list)
    unknown_keys: list[str] = field(default_factory=list)
    source: str = ""               # where it came from


@dataclass
class Row:
    """Both verdicts on one history."""

    file: str
    seed: str
    ours: Verdict
    porcupine: Verdict
    agree: bool | None


def result_of(linearizable: bool | None) -> str:
    """checker.py's verdict (True / False / None) as a porcupine-style result."""
    return {True: "ok", False: "illegal", None: "unknown"}[linearizable]


def agreement(ours: Verdict, theirs: Verdict) -> bool | None:
    """True: the same definite verdict (and the same violating keys); False: they differ;
    None: inconclusive (either search ran out of time)."""
    if "unknown" in (ours.result, theirs.result):
        return None
    return ours.result == theirs.result and \
        sorted(ours.illegal_keys) == sorted(theirs.illegal_keys)


def seed_of(path: Path) -> str:
    """The run's seed from `chaos-SEED.porcupine.json`; otherwise the file's name."""
    m = re.fullmatch(r"chaos-(\d+)\.porcupine\.json", path.name)
    return m.group(1) if m else path.name


def checker_path(explicit: str | None = None) -> Path | None:
    """The porcupine checker to run: `explicit`, else $GFS_PORCUPINE_CHECKER; None if neither."""
    value = explicit or os.environ.get(ENV_CHECKER)
    return Path(value) if value else None


def require_checker(explicit: str | None = None) -> Path:
    """The checker, which must be an executable file (CrossCheckError says what is wrong)."""
    path = checker_path(explicit)
    if path is None:
        raise CrossCheckError(NOT_CONFIGURED)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise CrossCheckError(f"porcupine checker {path} is not an executable file "
                              f"(build it: cd bench/chaos/porcupine && go mod tidy && go build)")
    return path


def parse_porcupine_output(text: str) -> dict[str, Verdict]:
    """The checker's JSON lines, by file. Raises CrossCheckError for a line it could not check
    (`{"file", "error"}`) or one that is not a verdict."""
    verdicts = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            if "error" in d:
                raise CrossCheckError(f"porcupine could not check {d.get('file')}: {d['error']}")
            if d["result"] not in RESULTS_KINDS:
                raise ValueError(f"result {d['result']!r}")
            verdicts[d["file"]] = Verdict(d["result"], int(d["ops"]), float(d["seconds"]),
                                          list(d["illegal_keys"]), list(d["unknown_keys"]),
                                          "porcupine")
        except (ValueError, KeyError, TypeError) as err:
            raise CrossCheckError(f"porcupine checker printed something that is not a "
                                  f"verdict ({err}): {line[:200]}") from None
    return verdicts


def run_porcupine(checker: Path, files: list[Path], timeout: float) -> dict[str, Verdict]:
    """Run the checker on `files` (each within `timeout` seconds); its verdicts by file."""
    try:
        proc = subprocess.run([str(checker), f"-timeout={timeout:g}s", *map(str, files)],
                              capture_output=True, text=True,
                              timeout=timeout * len(files) + 60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise CrossCheckError(f"porcupine checker {checker} did not run: {err}") from None
    verdicts = parse_porcupine_output(proc.stdout)      # raises on a file it could not check
    if proc.returncode not in (0, 1) or set(verdicts) != set(map(str, files)):
        raise CrossCheckError(f"porcupine checker {checker} failed (exit {proc.returncode}): "
                              f"{(proc.stderr or proc.stdout).strip()[-500:]}")
    return verdicts


def our_verdict(porcupine_file: Path, max_seconds_per_key: float = 60.0) -> Verdict:
    """checker.py's verdict on the run: as recorded in the chaos-SEED.json beside the file, or
    (no such file) checker.py run on the exported history."""
    run_file = porcupine_file.with_name(porcupine_file.name.replace(".porcupine.json", ".json"))
    if run_file != porcupine_file and run_file.exists():
        try:
            lin = json.loads(run_file.read_text())["summary"]["linearizability"]
            return Verdict(result_of(lin["linearizable"]), lin["ops"], lin["seconds"],
                           lin["violating_keys"], lin["unknown_keys"], f"recorded in {run_file.name}")
        except (ValueError, KeyError, TypeError) as err:
            raise CrossCheckError(f"{run_file}: no linearizability summary ({err!r})") from None
    try:
        history = history_from_porcupine(json.loads(porcupine_file.read_text()))
    except (OSError, ValueError) as err:
        raise CrossCheckError(f"{porcupine_file}: {err}") from None
    lin = summarise(check_partitioned(history, FileKeyModel(), max_seconds_per_key))
    return Verdict(result_of(lin["linearizable"]), lin["ops"], lin["seconds"],
                   lin["violating_keys"], lin["unknown_keys"], "checker.py on the export")


def cross_check(files: list[Path], checker: Path, timeout: float = 60.0) -> list[Row]:
    """Both verdicts on every file."""
    theirs = run_porcupine(checker, files, timeout)
    rows = []
    for f in files:
        ours = our_verdict(f, timeout)
        rows.append(Row(str(f), seed_of(f), ours, theirs[str(f)],
                        agreement(ours, theirs[str(f)])))
    return rows


def render(rows: list[Row]) -> str:
    """The rows as a table."""
    agree = {True: "yes", False: "NO", None: "inconclusive"}
    return table(["seed", "ops", "ours", "porcupine", "agree", "ours s", "porcupine s"],
                 [[r.seed, r.porcupine.ops, r.ours.result, r.porcupine.result, agree[r.agree],
                   f"{r.ours.seconds:.2f}", f"{r.porcupine.seconds:.2f}"] for r in rows])


def segment_cross_check(checker: Path, timeout: float = 120.0,
                        results: Path = RESULTS) -> Callable[[int], dict]:
    """For a campaign: a function that cross-checks the segment run with `seed` (its files in
    `results`) and returns what the record keeps of it; an error is recorded, not raised."""
    def check(seed: int) -> dict:
        try:
            row = cross_check([results / f"chaos-{seed}.porcupine.json"], checker, timeout)[0]
        except CrossCheckError as err:
            return {"error": str(err)}
        return {"ours": row.ours.result, "porcupine": row.porcupine.result,
                "agree": row.agree, "ops": row.porcupine.ops,
                "porcupine_seconds": round(row.porcupine.seconds, 2),
                **({"porcupine_illegal_keys": row.porcupine.illegal_keys}
                   if row.porcupine.illegal_keys else {})}
    return check


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.chaos.crosscheck", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", type=Path, metavar="FILE.porcupine.json")
    ap.add_argument("--checker", default=None,
                    help=f"the porcupine checker binary (default: ${ENV_CHECKER})")
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="seconds each checker may spend on one file (per key for ours)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON lines too")
    a = ap.parse_args(argv)
    try:
        rows = cross_check(a.files, require_checker(a.checker), a.timeout)
    except CrossCheckError as err:
        print(f"crosscheck: {err}", file=sys.stderr)
        return 2
    print(render(rows))
    if a.json:
        for r in rows:
            print(json.dumps(asdict(r)))
    return 1 if any(r.agree is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
