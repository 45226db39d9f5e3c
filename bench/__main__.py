"""Run benchmarks: `python -m bench [NAME ...] [-- options]`. Names: metadata, datapath, repair."""
from __future__ import annotations

import sys

SUITES = {"metadata": "bench.metadata", "datapath": "bench.datapath", "repair": "bench.repair"}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: ./run.sh bench NAME [options]   (NAME: " + ", ".join(SUITES) + ")")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUITES:
        print(f"bench: unknown benchmark {name!r} (have: {', '.join(SUITES)})", file=sys.stderr)
        return 2
    module = __import__(SUITES[name], fromlist=["main"])
    module.main(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
