"""Mounting and unmounting: in the foreground (this process serves the mount until it is
unmounted or signalled), or in the background (a child process serves it; we return once the
mount is there, or with the child's own error if it could not be made)."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from gfs.errors import FailedPrecondition, InvalidArgument
from gfs.memory import reuse_large_buffers
from gfs.mount.guard import MountGuard, mounts_at

MOUNT_WAIT_S = 20.0
# The kernel asks a FUSE file system for at most its read-ahead window per read request: 128 KiB
# by default, i.e. 8,192 Python callbacks per GiB; and it sends a sequential reader's next
# request only when the reader reaches the end of the window, so with a window of one request
# the mount answers one request at a time, each paying a full round of wake-ups (kernel, FUSE
# thread, GIL, reader). 8 MiB: requests of a whole 1 MiB block (the kernel's FUSE maximum),
# up to 8 of them in flight, answered by the mount's FUSE threads side by side.
KERNEL_READAHEAD_KIB = 8192

log = logging.getLogger("gfs.mount")


def is_mounted(mountpoint: str) -> bool:
    """Whether a file system is mounted exactly at `mountpoint` (per /proc/self/mountinfo,
    which, unlike os.path.ismount, does not stat a possibly hung FUSE mount)."""
    try:
        return mount_device(mountpoint) is not None
    except OSError:
        return os.path.ismount(os.path.realpath(mountpoint))


def check_mountpoint(mountpoint: str) -> str:
    path = Path(mountpoint)
    if not path.is_dir():
        raise InvalidArgument(f"mount point {mountpoint} is not a directory")
    if is_mounted(mountpoint):
        raise FailedPrecondition(f"{mountpoint} is already a mount point "
                                 f"(`gfs umount {mountpoint}` first)")
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        raise FailedPrecondition("cannot use /dev/fuse: FUSE is not available to this user "
                                 "(Debian: apt install fuse3; in a container: --device /dev/fuse)")
    return str(path.resolve())


def check_spool_dir(spool_dir: str) -> str:
    """The spool directory as an absolute path, once it is a writable directory."""
    path = Path(spool_dir)
    if not path.is_dir():
        raise InvalidArgument(f"spool directory {spool_dir} is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise InvalidArgument(f"spool directory {spool_dir} is not writable")
    return str(path.resolve())


def mount_device(mountpoint: str) -> str | None:
    """The "major:minor" of the file system mounted exactly at `mountpoint`, read from
    /proc/self/mountinfo without touching the mount itself (OSError if that is unreadable)."""
    entries = mounts_at(mountpoint)
    return entries[-1][1] if entries else None


def raise_kernel_readahead(mountpoint: str, kib: int = KERNEL_READAHEAD_KIB) -> bool:
    """Let the kernel send read requests of up to `kib` KiB to this mount (its backing-device
    read-ahead, /sys/class/bdi/MAJ:MIN/read_ahead_kb). Only root may; others keep 128 KiB
    requests, which work, at a higher CPU cost per byte."""
    try:
        device = mount_device(mountpoint)
    except OSError:
        device = None
    if device is None:
        return False
    knob = f"/sys/class/bdi/{device}/read_ahead_kb"
    try:
        with open(knob, "w") as f:
            f.write(str(kib))
    except OSError as e:
        log.info("kernel read-ahead of %s stays at its default (%s: %s); sequential reads use "
                 "smaller requests", mountpoint, knob, e.strerror)
        return False
    log.info("kernel read-ahead of %s set to %d KiB", mountpoint, kib)
    return True


def serve(operations, mountpoint: str) -> None:
    """Serve the mount in this process until it is unmounted (or SIGINT/SIGTERM/SIGHUP; see
    guard.py: the process ends once its mount is gone, and unmounts no other)."""
    from gfs.mount.fuse_binding import Fuse
    reuse_large_buffers()      # its blocks are bounded by the cache: no fault per page
    MountGuard(mountpoint, MOUNT_WAIT_S, on_mounted=raise_kernel_readahead).start()
    Fuse(operations, mountpoint, foreground=True, nothreads=False, fsname="gfs", subtype="gfs")


def start_background(argv: list[str], mountpoint: str, log_file: str,
                     env: dict[str, str]) -> int:
    """Run `argv` (a foreground mount command) as a detached child logging to `log_file`;
    return its PID once the mount is there, or raise with what the child said."""
    with open(log_file, "ab") as log:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 env=env, start_new_session=True)
    deadline = time.monotonic() + MOUNT_WAIT_S
    while time.monotonic() < deadline:
        if is_mounted(mountpoint):
            return child.pid
        if child.poll() is not None:
            raise FailedPrecondition(f"the mount process exited ({child.returncode}): "
                                     f"{_last_error(log_file)}")
        time.sleep(0.05)
    child.kill()
    raise FailedPrecondition(f"{mountpoint} was not mounted within {MOUNT_WAIT_S:.0f} s "
                             f"(log: {log_file})")


def _last_error(log_file: str) -> str:
    try:
        lines = [line for line in Path(log_file).read_text(errors="replace").splitlines() if line]
    except OSError:
        return "no log"
    return lines[-1][-300:] if lines else "no output"


def unmount(mountpoint: str) -> None:
    if not is_mounted(mountpoint):
        raise FailedPrecondition(f"{mountpoint} is not mounted")
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    argv = [tool, "-u", mountpoint] if tool else ["umount", mountpoint]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise FailedPrecondition(f"could not unmount {mountpoint}: "
                                 f"{(done.stderr or done.stdout).strip() or done.returncode}")


def python_argv() -> list[str]:
    """How to run the `gfs` command again from here (the same interpreter and code)."""
    return [sys.executable, "-m", "cli.main"]
