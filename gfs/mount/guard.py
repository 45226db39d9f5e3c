"""Ending a mount process when its mount is gone, and never unmounting a mount it does not own.

libfuse's own handling is by path: its SIGTERM/SIGHUP handler (and the end of its loop) unmounts
whatever is mounted at the mount point. A mount detached by a lazy unmount while a program still
had a file open keeps its process alive; once another mount is made at the same path, a SIGTERM
to that stale process unmounted the newer one. So a `MountGuard` (a thread of the mount process)

- learns which mount is this process's once it appears: its mount ID and device in
  /proc/self/mountinfo (each entry's ID is unique while it is mounted);
- exits the process as soon as that mount is no longer there (unmounted, or detached lazily),
  without libfuse's unmount by path;
- takes SIGTERM and SIGHUP itself (libfuse installs its handlers only where none is set):
  it unmounts the mount point only if the mount on top there is still this process's, then
  exits as above.
"""
from __future__ import annotations

import logging
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from typing import Callable

log = logging.getLogger("gfs.mount")

POLL_S = 0.25                  # how often the guard looks at the mount table
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)

MountEntry = tuple[str, str]   # (mount ID, "major:minor")


def mounts_at(mountpoint: str) -> list[MountEntry]:
    """The mounts at exactly `mountpoint`, bottom to top (the last is the one a path lookup
    sees), from /proc/self/mountinfo, without touching the mounts (OSError if unreadable)."""
    target = os.path.realpath(mountpoint)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4].replace("\\040", " ") == target:
                found.append((fields[0], fields[2]))
    return found


class MountGuard:
    """See the module's docstring. `start()` from the main thread before libfuse mounts (it
    installs the signal handlers); `exit` is how the process ends (os._exit by default)."""

    def __init__(self, mountpoint: str, wait_s: float = 20.0,
                 on_mounted: Callable[[str], object] | None = None,
                 exit: Callable[[int], object] = os._exit):
        self.mountpoint = os.path.realpath(mountpoint)
        self.wait_s = wait_s
        self.on_mounted = on_mounted
        self.mine: MountEntry | None = None
        self._exit = exit
        self._signals_r, self._signals_w = os.pipe()
        os.set_blocking(self._signals_w, False)

    def start(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, lambda *_: None)     # the wakeup fd tells the guard
        signal.set_wakeup_fd(self._signals_w, warn_on_full_buffer=False)
        threading.Thread(target=self._run, daemon=True, name="gfs-mount-guard").start()

    def _entries(self) -> list[MountEntry] | None:
        try:
            return mounts_at(self.mountpoint)
        except OSError:
            return None                              # unknown: change nothing

    def _run(self) -> None:
        deadline = time.monotonic() + self.wait_s
        while self.mine is None:
            entries = self._entries()
            if entries:
                self.mine = entries[-1]
            elif time.monotonic() > deadline:
                return                               # never mounted: libfuse says why
            else:
                time.sleep(0.02)
        if self.on_mounted is not None:
            self.on_mounted(self.mountpoint)
        while True:
            ready, _, _ = select.select([self._signals_r], [], [], POLL_S)
            stop = bool(ready) and bool(os.read(self._signals_r, 64))
            entries = self._entries()
            if entries is None:
                continue
            if self.mine not in entries:
                log.info("%s is no longer mounted by this process (mount %s, device %s; "
                         "there now: %s): exiting", self.mountpoint, *self.mine,
                         ", ".join(f"mount {i} device {d}" for i, d in entries) or "none")
                return self._end()
            if stop:
                self._unmount_mine(entries)

    def _unmount_mine(self, entries: list[MountEntry]) -> None:
        if entries[-1] != self.mine:
            log.warning("asked to stop, but another mount covers %s: exiting without "
                        "unmounting it", self.mountpoint)
            return self._end()
        log.info("asked to stop: unmounting %s", self.mountpoint)
        tool = shutil.which("fusermount3") or shutil.which("fusermount")
        argv = [tool, "-u", "-z", self.mountpoint] if tool else ["umount", "-l", self.mountpoint]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            log.warning("could not unmount %s: %s", self.mountpoint,
                        (done.stderr or done.stdout).strip() or done.returncode)
            self._end()

    def _end(self) -> None:
        for handler in logging.getLogger().handlers + log.handlers:
            handler.flush()
        self._exit(0)
