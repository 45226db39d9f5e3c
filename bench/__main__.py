"""Run the benchmark suite: `python -m bench [NAME ...] [--quick] [options]` (`./run.sh bench`).

With no NAME every benchmark runs; each runs against its own fresh local cluster, beside the
machine's limits (and etcd, for metadata, small files and failover) measured in the same run.
Writes bench/results/<date>.json, <date>.md (the report) and <date>-*.png (plots).
Options of a benchmark (e.g. `metadata --seconds 5 --concurrency 1,64`) override its profile's
settings; an option applies to every chosen benchmark that has it. See docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import os
import sys

from bench import suite


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", metavar="NAME",
                    help="benchmarks to run (default: all): " + ", ".join(suite.MODULES))
    ap.add_argument("--quick", action="store_true",
                    help="small sizes, 1 repetition, short windows (the smoke test's profile)")
    ap.add_argument("--reps", type=int, help="repetitions of every measurement "
                                             "(default: 3, or 1 with --quick)")
    ap.add_argument("--seed", type=int, default=7, help="seed of generated data (default: 7)")
    ap.add_argument("--data", help="directory on the disk to measure (default: a temp dir)")
    ap.add_argument("--out", help="where results go (default: bench/results)")
    ap.add_argument("--no-etcd", action="store_true", help="skip the etcd comparisons")
    helps: dict[str, dict[str, list[str]]] = {}       # flag -> help text -> benchmarks
    for name in suite.MODULES:
        for opt in suite.module(name).OPTIONS:
            helps.setdefault(opt.flag, {}).setdefault(opt.help, []).append(name)
    for flag, texts in helps.items():
        ap.add_argument(flag, dest=flag, metavar="X",
                        help="; ".join(f"{', '.join(names)}: {text}"
                                       for text, names in texts.items()))
    return ap


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    unknown = [n for n in a.names if n not in suite.MODULES]
    if unknown:
        print(f"bench: unknown benchmark {unknown[0]!r} (have: {', '.join(suite.MODULES)})",
              file=sys.stderr)
        return 2
    names = list(dict.fromkeys(a.names)) or list(suite.MODULES)
    given = {k: v for k, v in vars(a).items() if k.startswith("--") and v is not None}
    for flag in given:
        if not any(opt.flag == flag for n in names for opt in suite.module(n).OPTIONS):
            print(f"bench: {flag} is not an option of {', '.join(names)}", file=sys.stderr)
            return 2
    if a.reps is not None and a.reps < 1:
        print("bench: --reps must be at least 1", file=sys.stderr)
        return 2
    for flag, path in (("--data", a.data), ("--out", a.out)):
        try:
            if path:
                os.makedirs(path, exist_ok=True)       # a directory that is not there yet
        except OSError as err:
            print(f"bench: {flag} {path}: {err.strerror}", file=sys.stderr)
            return 2
    try:
        done = suite.run(names, "quick" if a.quick else "full", given, a.reps, a.seed, a.data,
                         a.out, etcd=not a.no_etcd)
    except ValueError as err:
        print(f"bench: {err}", file=sys.stderr)
        return 2
    print(done["markdown"].read_text())
    print(f"results: {done['json']}\nreport:  {done['markdown']}")
    for p in done["plots"]:
        print(f"plot:    {p}")
    if done["failed"]:
        print(f"bench: failed: {', '.join(done['failed'])}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from bench.common import stop_cleanly_on_sigterm
    stop_cleanly_on_sigterm()
    sys.exit(main(sys.argv[1:]))
