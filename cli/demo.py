"""The README's first command: start a local cluster on this machine and use it.

    ./run.sh demo [--data DIR] [--size SIZE] [--keep]

Starts 3 masters and 3 chunkservers as background processes (in DIR, default ./.gfs-demo),
puts a file and gets it back through the same `gfs` CLI a user would type (checking the bytes),
and shows the cluster's status. Then it cleans up after itself: the demo file is deleted for
good (not left in the trash), the cluster stopped and DIR removed. With --keep the cluster keeps
running with the demo file in place, so `gfs ...` commands can look at it; the next demo run
without --keep removes it all. The demo only uses (and removes) a DIR that it created: an
existing directory of anything else is refused. After a failure DIR stays, with the logs.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from gfs.config import recorded_cluster_file, token_file, write_private
from gfs.units import human_size, parse_size

MARKER = "created-by-gfs-demo"      # in DIR: the demo may remove DIR
DEMO_FILE = "/demo/pictures/2026/random.bin"


def gfs(*args: str) -> None:
    print(f"$ gfs {' '.join(shlex.quote(a) for a in args)}", flush=True)
    proc = subprocess.run([sys.executable, "-m", "cli.main", *args])
    if proc.returncode != 0:
        raise SystemExit(f"demo: `gfs {' '.join(args)}` failed with exit code {proc.returncode}")


def claim(data: Path) -> bool:
    """Mark DIR as the demo's if it is new (or already the demo's); False for any other dir."""
    if (data / MARKER).exists():
        return True
    if data.exists() and any(data.iterdir()):
        return False
    data.mkdir(parents=True, exist_ok=True)
    (data / MARKER).write_text("this directory was created by `./run.sh demo`, which removes it\n")
    return True


def remembered() -> dict[Path, str | None]:
    """The recorded cluster and token `gfs cluster up` replaces (None: there was none)."""
    out: dict[Path, str | None] = {}
    for path in (recorded_cluster_file(), token_file()):
        try:
            out[path] = path.read_text()
        except OSError:
            out[path] = None
    return out


def forget(data: Path, before: dict[Path, str | None]) -> None:
    """Remove DIR, and put back the recorded cluster and token that the demo's `cluster up`
    replaced (so `gfs` neither looks for the demo cluster nor forgets the user's own)."""
    shutil.rmtree(data)
    try:                        # remembered from an earlier --keep run: the demo's own
        if Path(json.loads(before[recorded_cluster_file()] or "{}").get("data", "")) == data:
            before = dict.fromkeys(before)
    except (ValueError, AttributeError):
        pass
    for path, text in before.items():
        if text is None:
            path.unlink(missing_ok=True)
        else:
            write_private(path, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="run.sh demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.abspath(".gfs-demo"))
    ap.add_argument("--size", default="100MiB", help="size of the demo file (default 100MiB)")
    ap.add_argument("--keep", action="store_true",
                    help="leave the cluster running with the demo file in place")
    a = ap.parse_args(argv)
    data, size = Path(a.data).absolute(), parse_size(a.size)
    if not claim(data):
        raise SystemExit(f"demo: {data} exists and was not created by the demo: give another "
                         "--data (the demo removes its directory afterwards)")
    before = remembered()
    gfs("cluster", "up", "--masters", "3", "--chunkservers", "3", "--data", str(data))
    ok = False
    try:
        if _exists("/demo"):                    # left by an earlier --keep run
            gfs("rm", "-r", "--skip-trash", "/demo")
        with tempfile.TemporaryDirectory() as tmp:
            src, back = os.path.join(tmp, "random.bin"), os.path.join(tmp, "back.bin")
            with open(src, "wb") as f:
                f.write(os.urandom(size))
            gfs("mkdir", "-p", "/demo/photos/2026")
            gfs("put", src, "/demo/photos/2026/")
            gfs("mv", "/demo/photos", "/demo/pictures")
            gfs("ls", "-l", "/demo/pictures/2026")
            gfs("get", DEMO_FILE, back)
            if not filecmp.cmp(src, back, shallow=False):
                raise SystemExit("demo: the file read back differs from the file written")
            print(f"demo: {human_size(size)} written with 3 replicas and read back "
                  "byte-identical")
        gfs("stat", DEMO_FILE)
        gfs("master", "status")
        gfs("cluster", "status", "--data", str(data))
        if not a.keep:
            gfs("rm", "-r", "--skip-trash", "/demo")
        ok = True
    finally:
        if not a.keep:
            gfs("cluster", "down", "--data", str(data))
            if ok:
                forget(data, before)
                print(f"demo: removed {data}")
            elif not ok:
                print(f"demo: the daemons' logs are in {data}/*/daemon.log")
    if a.keep:
        print(f"demo: the cluster keeps running with {DEMO_FILE} in it: try `gfs ls -l "
              f"/demo/pictures/2026`; `./run.sh demo` (without --keep) or `gfs cluster down "
              f"--data {data}` stops it")
    print("demo: ok")
    return 0


def _exists(path: str) -> bool:
    """Does `path` exist in the demo cluster?"""
    return subprocess.run([sys.executable, "-m", "cli.main", "stat", path],
                          capture_output=True).returncode == 0


if __name__ == "__main__":
    sys.exit(main())
