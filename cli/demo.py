"""The README's first command: start a local cluster on this machine and use it.

    ./run.sh demo [--data DIR] [--keep]

Starts 3 masters and 3 chunkservers as background processes (in DIR, default ./.gfs-demo),
puts a file and gets it back through the same `gfs` CLI a user would type (checking the bytes),
shows the cluster's status, and stops the cluster again unless --keep is given (then `gfs ...`
commands keep working).
"""
from __future__ import annotations

import argparse
import filecmp
import os
import shlex
import subprocess
import sys
import tempfile


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
    gfs("cluster", "up", "--masters", "3", "--chunkservers", "3", "--data", a.data)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            src, back = os.path.join(tmp, "random.bin"), os.path.join(tmp, "back.bin")
            with open(src, "wb") as f:
                f.write(os.urandom(100 << 20))
            gfs("mkdir", "-p", "/demo/photos/2026")
            gfs("put", src, "/demo/photos/2026/random.bin")
            gfs("mv", "/demo/photos", "/demo/pictures")
            gfs("ls", "-l", "/demo/pictures/2026")
            gfs("get", "/demo/pictures/2026/random.bin", back)
            if not filecmp.cmp(src, back, shallow=False):
                raise SystemExit("demo: the file read back differs from the file written")
            print("demo: 100 MiB written with 3 replicas and read back byte-identical")
        gfs("stat", "/demo/pictures/2026/random.bin")
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
