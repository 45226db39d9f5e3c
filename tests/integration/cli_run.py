"""Run the real `gfs` command line in a subprocess, as a user would."""
from __future__ import annotations

import subprocess
import sys


def gfs(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`gfs ARGS` with environment `env`; with `check`, its exit status must be 0."""
    proc = subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True,
                          text=True, env=env, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc
