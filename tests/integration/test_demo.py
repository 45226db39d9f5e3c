"""`./run.sh demo` (cli/demo.py) with a small file: it cleans up after itself unless --keep,
and with --keep leaves the cluster running with the demo file in place."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from gfs.client import Client
from gfs.errors import GfsError


def demo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.demo", "--size", "1MiB", *args],
                          capture_output=True, timeout=300)


def test_demo_keeps_its_cluster_only_when_asked(tmp_path):
    """(conftest points GFS_CONFIG_DIR at an empty directory: no cluster recorded before.)"""
    data = tmp_path / "demo"
    config = Path(os.environ["GFS_CONFIG_DIR"])
    kept = demo("--data", str(data), "--keep")
    assert kept.returncode == 0, kept.stderr.decode()[-2000:]
    masters = [m["grpc"] for m in json.loads((data / "cluster.json").read_text())["masters"]]
    token = (data / "admin.token").read_text().strip()
    try:
        with Client(masters, token=token) as c:
            assert c.stat("/demo/pictures/2026/random.bin").size == 1 << 20
            assert c.trash_list() == []
        again = demo("--data", str(data))        # a run without --keep removes it all
        assert again.returncode == 0, again.stderr.decode()[-2000:]
        assert not data.exists()
        assert not (config / "cluster.json").exists() and not (config / "token").exists()
        with Client(masters, token=token, deadline=5) as c:
            try:
                c.stat("/")
                raise AssertionError("the demo's masters still answer")
            except GfsError as err:
                assert err.code == "UNAVAILABLE" and "no master can be reached" in err.message
    finally:
        if data.exists():
            subprocess.run([sys.executable, "-m", "cli.main", "cluster", "down", "--data",
                            str(data)], capture_output=True, timeout=120)


def test_demo_refuses_a_directory_it_did_not_create(tmp_path):
    (tmp_path / "mine.txt").write_text("not the demo's")
    p = demo("--data", str(tmp_path))
    assert p.returncode == 1 and b"was not created by the demo" in p.stderr
    assert (tmp_path / "mine.txt").exists()
