"""The README's first command: start a local cluster on this machine and use it.

    ./run.sh demo [--data DIR] [--keep]

Starts 3 masters as background processes (in DIR, default ./.gfs-demo), runs a few namespace
operations through the same `gfs` CLI a user would type, shows the cluster's status, and
stops the cluster again unless --keep is given (then `gfs ...` commands keep working).
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys


def gfs(*args: str) -> None:
    print(f"$ gfs {' '.join(shlex.quote(a) for a in args)}", flush=True)
    proc = subprocess.run([sys.executable, "-m", "cli.main", *args])
    if proc.returncode != 0:
        raise SystemExit(f"demo: `gfs {' '.join(args)}` failed with exit code {proc.returncode}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="run.sh demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.abspath(".gfs-demo"))
    ap.add_argument("--keep", action="store_true", help="leave the cluster running")
    a = ap.parse_args(argv)
    gfs("cluster", "up", "--masters", "3", "--data", a.data)
    try:
        gfs("mkdir", "-p", "/demo/photos/2026")
        gfs("mv", "/demo/photos", "/demo/pictures")
        gfs("ls", "-l", "/demo")
        gfs("stat", "/demo/pictures/2026")
        gfs("master", "status")
        gfs("cluster", "status", "--data", a.data)
        gfs("rm", "-r", "/demo")
    finally:
        if not a.keep:
            gfs("cluster", "down", "--data", a.data)
    print("demo: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
