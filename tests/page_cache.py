"""Helpers for tests of writes and reads around the page cache (O_DIRECT): whether a directory's
file system takes O_DIRECT, how many of a file's pages are cached, and a file system that
refuses O_DIRECT (EINVAL, as tmpfs before Linux 6.6 does)."""
from __future__ import annotations

import errno
import os
import subprocess

import pytest


def needs_o_direct(where) -> None:
    """Skip the test where `where`'s file system refuses O_DIRECT."""
    try:
        os.close(os.open(os.path.join(where, ".o_direct_probe"),
                         os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600))
    except OSError as err:
        pytest.skip(f"{where}'s file system refuses O_DIRECT ({err.strerror})")


def cached_pages(path) -> int:
    """Pages of `path` in the page cache, per util-linux fincore."""
    done = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "-o", "PAGES",
                           str(path)], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[0])


def refuse_o_direct(monkeypatch, module) -> None:
    """Make `module`'s os.open refuse O_DIRECT with EINVAL (every other open as usual)."""
    real_open = os.open

    def no_direct(path, flags, *args):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "O_DIRECT refused")
        return real_open(path, flags, *args)

    monkeypatch.setattr(module.os, "open", no_direct)
