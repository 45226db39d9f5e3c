"""Fixtures for tests on FaultFS mounts: every mount made through them is unmounted at teardown,
whatever the test did."""
from __future__ import annotations

import pytest

from bench.chaos.faultfs import FaultFS, fuse_available

needs_fuse = pytest.mark.skipif(
    not fuse_available(),
    reason="FaultFS needs /dev/fuse and fusermount3 (Debian package fuse3; ./run.sh setup)")


@pytest.fixture
def faultfs(tmp_path):
    """mount(name="fs") -> a FaultFS with its backing at tmp/NAME.backing, mounted at tmp/NAME."""
    mounts: list[FaultFS] = []

    def mount(name: str = "fs") -> FaultFS:
        fs = FaultFS.mount(tmp_path / f"{name}.backing", tmp_path / name)
        mounts.append(fs)
        return fs

    yield mount
    for fs in mounts:
        fs.unmount()
