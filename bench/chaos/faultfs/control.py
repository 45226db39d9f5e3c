"""The control API of a FaultFS mount (used by tests, LocalCluster and the chaos nemesis)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SERVER_FILE = "server.json"          # in the state directory: the server's pid and socket
POWER_LOSS_FILE = "power-loss.json"  # in the state directory: the last power loss's result
_REPO_ROOT = str(Path(__file__).resolve().parents[3])   # the server imports bench.chaos.faultfs


class FaultFSError(RuntimeError):
    """The FaultFS server did not do what it was asked."""


def is_mounted(path: str | os.PathLike) -> bool:
    """Is `path` a mount point (read from /proc/mounts: a FUSE mount whose server died cannot
    even be stat'ed)?"""
    target = os.path.abspath(path)
    with open("/proc/self/mounts") as f:
        for line in f:
            point = line.split()[1].encode().decode("unicode_escape")
            if point == target:
                return True
    return False


def fuse_available() -> bool:
    """Can FaultFS mount here (/dev/fuse and fusermount3: Debian's fuse3, ./run.sh setup)?"""
    return os.path.exists("/dev/fuse") and shutil.which("fusermount3") is not None


def _lazy_unmount(path: str) -> None:
    if is_mounted(path):
        subprocess.run(["fusermount3", "-u", "-z", path], capture_output=True, timeout=10)


def _server_running(pid: int, marker: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    except (OSError, IndexError):
        return False
    return "bench.chaos.faultfs.server" in cmdline and marker in cmdline


class FaultFS:
    """One FaultFS mount: `backing` (where the files really are) shown at `mountpoint`, with
    its undo log and control state in `state_dir` (default BACKING.faultfs; it must be on the
    same file system as `backing`).

        fs = FaultFS.mount(backing, mountpoint)
        ... daemons write under mountpoint; kill -9 them ...
        fs.power_loss("all")            # discard what was not durable, remount clean
        fs.enospc(True); fs.eio("raft/*", ["fsync"]); fs.fsync_delay(0.1, 2.0)
        fs.unmount()
    """

    def __init__(self, backing: str | os.PathLike, mountpoint: str | os.PathLike,
                 state_dir: str | os.PathLike | None = None):
        self.backing = str(Path(backing).resolve())
        self.mountpoint = str(Path(mountpoint).resolve())
        self.state_dir = str(Path(state_dir).resolve()) if state_dir else self.backing + ".faultfs"
        self._proc: subprocess.Popen | None = None

    @classmethod
    def mount(cls, backing: str | os.PathLike, mountpoint: str | os.PathLike,
              state_dir: str | os.PathLike | None = None, owner_pid: int | None = None,
              timeout: float = 15.0) -> "FaultFS":
        """Mount (creating the directories) and return the handle. `owner_pid` (default: this
        process): the server unmounts itself when that process is gone."""
        fs = cls(backing, mountpoint, state_dir)
        fs.start(owner_pid=owner_pid, timeout=timeout)
        return fs

    # --- the server process ---------------------------------------------------------------------

    def _info(self) -> dict | None:
        try:
            return json.loads((Path(self.state_dir) / SERVER_FILE).read_text())
        except (OSError, ValueError):
            return None

    @property
    def pid(self) -> int | None:
        """The server's pid if it runs (checked against its command line, never by name)."""
        info = self._info()
        if info and _server_running(info["pid"], self.state_dir):
            return info["pid"]
        return None

    @property
    def mounted(self) -> bool:
        return self.pid is not None and is_mounted(self.mountpoint)

    def start(self, owner_pid: int | None = None, timeout: float = 15.0) -> None:
        """Mount if not mounted."""
        if self.mounted:
            return
        for d in (self.backing, self.mountpoint, self.state_dir):
            os.makedirs(d, exist_ok=True)
        _lazy_unmount(self.mountpoint)               # a mount left by a server that died
        (Path(self.state_dir) / SERVER_FILE).unlink(missing_ok=True)
        logf = open(Path(self.state_dir) / "server.log", "ab")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.chaos.faultfs.server", self.backing, self.mountpoint,
             self.state_dir, "--owner-pid", str(owner_pid or os.getpid())],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(
                p for p in (_REPO_ROOT, os.environ.get("PYTHONPATH")) if p)})
        logf.close()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self._proc.poll() is not None:
                raise FaultFSError(f"FaultFS server exited with code {self._proc.returncode}; "
                                   f"see {self.state_dir}/server.log")
            if self._info() and is_mounted(self.mountpoint):
                return
            time.sleep(0.02)
        self._kill()
        raise FaultFSError(f"FaultFS did not mount {self.mountpoint} within {timeout:.0f}s")

    def request(self, request: dict, timeout: float = 10.0) -> dict:
        """Send one control request; returns the server's answer (FaultFSError if refused)."""
        info = self._info()
        if not info or not self.pid:
            raise FaultFSError(f"FaultFS at {self.mountpoint} is not running")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect("\0" + info["socket"])
            s.sendall(json.dumps(request).encode() + b"\n")
            reply = json.loads(s.makefile("rb").readline() or b"{}")
        if not reply.get("ok"):
            raise FaultFSError(reply.get("error", "no answer from the FaultFS server"))
        reply.pop("ok")
        return reply

    def _stop(self, timeout: float) -> bool:
        """SIGTERM the server (it unmounts and finishes); True if it exited in time."""
        pid = self.pid
        if pid is None:
            return True
        os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self._proc is not None and self._proc.pid == pid:
                if self._proc.poll() is not None:
                    return True
            elif not _server_running(pid, self.state_dir):
                return True
            time.sleep(0.02)
        return False

    def _kill(self) -> None:
        pid = self.pid
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            if self._proc is not None and self._proc.pid == pid:
                self._proc.wait(10)
        _lazy_unmount(self.mountpoint)

    # --- faults ---------------------------------------------------------------------------------

    def status(self) -> dict:
        """Pending (not durable) writes and directory changes, spill size, faults, fsyncs."""
        return self.request({"op": "status"})

    def enospc(self, on: bool = True) -> None:
        """While on, whatever allocates space (a write past the end of a file, a create, mkdir,
        a growing truncate) fails with ENOSPC, and statfs reports no free space."""
        self.request({"op": "enospc", "on": on})

    def eio(self, path_glob: str | None, ops: tuple[str, ...] | list[str] = ("write", "fsync")) -> None:
        """Fail `ops` (faults.EIO_OPS) on paths matching `path_glob` (relative to the mount,
        fnmatch: "*" crosses "/") with EIO; None clears the rule."""
        self.request({"op": "eio", "glob": path_glob, "ops": list(ops) if path_glob else []})

    def fsync_delay(self, low: float, high: float | None = None) -> None:
        """Every fsync/fdatasync (files and directories) takes uniform(low, high) seconds;
        0 switches the delay off."""
        self.request({"op": "fsync_delay", "min": low, "max": low if high is None else high})

    def clear_faults(self) -> None:
        self.enospc(False)
        self.eio(None)
        self.fsync_delay(0)

    def power_loss(self, mode: str = "all", seed: int | None = None, remount: bool = True,
                   timeout: float = 120.0) -> dict:
        """Cut the power: call it after the processes using the mount were killed (kill -9).
        Discards what was not durable ("all"), or a random suffix of it ("prefix"), or random
        pages of it ("torn"; see undo.UndoLog.power_loss), then mounts again with empty caches
        and no faults. Returns what was lost and kept."""
        self.request({"op": "power_off", "mode": mode, "seed": seed})
        result_file = Path(self.state_dir) / POWER_LOSS_FILE
        result_file.unlink(missing_ok=True)
        if not self._stop(timeout):
            self._kill()
            raise FaultFSError(f"FaultFS server for {self.mountpoint} did not finish the power "
                               f"loss within {timeout:.0f}s; see {self.state_dir}/server.log")
        _lazy_unmount(self.mountpoint)
        try:
            result = json.loads(result_file.read_text())
        except (OSError, ValueError):
            raise FaultFSError(f"FaultFS server for {self.mountpoint} wrote no power-loss "
                               f"result; see {self.state_dir}/server.log") from None
        if remount:
            self.start()
        return result

    def unmount(self, timeout: float = 30.0) -> None:
        """Unmount cleanly (everything written is kept); never fails in a teardown: a server that
        does not stop is killed and the mount detached."""
        if not self._stop(timeout):
            self._kill()
        _lazy_unmount(self.mountpoint)
