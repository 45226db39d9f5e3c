"""Shared fixtures: real local clusters in temporary directories, always cleaned up by PID."""
from __future__ import annotations

import os
import signal

import pytest

from cli.localcluster import PORT_RANGE_ENV, LocalCluster, port_range


def _own_port_range() -> None:
    """Under pytest-xdist (./run.sh test runs two workers), each worker picks its clusters'
    ports from its own slice of the range, inherited by the CLI processes it starts."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not worker or not count or PORT_RANGE_ENV in os.environ:
        return
    low, high = port_range()
    index, share = int(worker.removeprefix("gw")), (high - low) // int(count)
    os.environ[PORT_RANGE_ENV] = f"{low + index * share}-{low + (index + 1) * share}"


_own_port_range()


@pytest.fixture(autouse=True)
def _isolated_user_config(tmp_path_factory, monkeypatch):
    """Never read or write the real user's recorded cluster."""
    monkeypatch.setenv("GFS_CONFIG_DIR", str(tmp_path_factory.mktemp("gfs-config")))
    monkeypatch.delenv("GFS_MASTERS", raising=False)
    monkeypatch.setenv("GFS_TOKEN", "")      # no test inherits another's (or the user's) token


@pytest.fixture(autouse=True, scope="session")
def _small_files_in_chunks():
    """Masters store small files as chunks unless a test turns inline files on (--inline-max):
    the data-path, repair and security tests put small files to exercise chunks. Session-wide,
    so that module-scoped clusters (started before any function-scoped fixture) get it too."""
    before = os.environ.get("GFS_INLINE_MAX")
    os.environ["GFS_INLINE_MAX"] = "0"
    yield
    if before is None:
        os.environ.pop("GFS_INLINE_MAX", None)
    else:
        os.environ["GFS_INLINE_MAX"] = before


class ClusterFactory:
    def __init__(self, base):
        self.base = base
        self.clusters: list[LocalCluster] = []

    def __call__(self, masters: int = 3, name: str = "cluster", options: dict | None = None,
                 start: bool = True, faultfs: bool = False) -> LocalCluster:
        c = LocalCluster(self.base / name)
        c.create(masters=masters, options=options, faultfs=faultfs)
        self.clusters.append(c)
        if start:
            c.up()
        return c

    def cleanup(self):
        for c in self.clusters:
            for d in c.processes():
                pid = c.pid(d["name"])
                if pid:
                    try:
                        os.kill(pid, signal.SIGCONT)
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            for proc in c._procs.values():
                try:
                    proc.wait(timeout=10)
                except Exception:
                    pass
            c.unmount_disks()


@pytest.fixture
def make_cluster(tmp_path):
    factory = ClusterFactory(tmp_path)
    yield factory
    factory.cleanup()


@pytest.fixture(scope="module")
def make_module_cluster(tmp_path_factory):
    """Like make_cluster, for one cluster shared by every test of a module."""
    factory = ClusterFactory(tmp_path_factory.mktemp("module-cluster"))
    yield factory
    factory.cleanup()
