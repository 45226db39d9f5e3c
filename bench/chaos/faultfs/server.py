"""The FaultFS server process: mounts the file system and serves its control socket.

    python -m bench.chaos.faultfs.server BACKING MOUNTPOINT STATE_DIR [--owner-pid PID]

Control: one JSON request per connection on the abstract Unix socket named in
STATE_DIR/server.json, answered with one JSON line ({"ok": true, ...} or {"ok": false,
"error": ...}). Only processes of the same user are answered. Requests: status, enospc, eio,
fsync_delay (faults.py) and power_off {"mode", "seed"}: from then on every operation fails
with EIO, and when the server is then stopped (SIGTERM, which unmounts) it undoes what the
power loss takes, writes STATE_DIR/power-loss.json and exits. Stopped without power_off, it
keeps everything (a clean unmount).

With --owner-pid, the server unmounts and exits when that process is gone, so a crashed test
leaves no mount behind."""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import secrets
import signal
import socket
import struct
import sys
import threading
import time

import mfusepy

from bench.chaos.faultfs.control import POWER_LOSS_FILE, SERVER_FILE
from bench.chaos.faultfs.faults import Faults
from bench.chaos.faultfs.ops import FaultOps
from bench.chaos.faultfs.undo import MODES, UndoLog

log = logging.getLogger("faultfs")

# fuse_main's exit code when its loop ended on a signal (our SIGTERM): a normal stop.
_STOPPED_BY_SIGNAL = 8


class Server:
    def __init__(self, backing: str, mountpoint: str, state_dir: str):
        self.backing, self.mountpoint, self.state_dir = backing, mountpoint, state_dir
        self.faults = Faults()
        self.log = UndoLog(backing, state_dir)
        self.ops = FaultOps(backing, self.log, self.faults)
        self.power_loss: dict | None = None
        self.socket_name = f"gfs-faultfs-{secrets.token_hex(8)}"

    def handle(self, request: dict) -> dict:
        op = request.get("op")
        if op == "status":
            with self.log.lock:
                pending = self.log.stats()
            return {"pid": os.getpid(), "faults": self.faults.describe(),
                    "fsyncs": self.ops.fsyncs, **pending}
        if op == "power_off":
            mode = request.get("mode", "all")
            if mode not in MODES:
                raise ValueError(f"power loss mode must be one of {', '.join(MODES)}")
            self.faults.powered_off = True
            self.power_loss = {"mode": mode, "seed": request.get("seed")}
            return {}
        self.faults.configure(request)
        return {"faults": self.faults.describe()}

    def serve_control(self, sock: socket.socket) -> None:
        while True:
            conn, _ = sock.accept()
            with conn:
                try:
                    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                            struct.calcsize("3i"))
                    _pid, uid, _gid = struct.unpack("3i", creds)
                    if uid != os.getuid():
                        continue
                    line = conn.makefile("rb").readline()
                    reply = {"ok": True, **self.handle(json.loads(line))}
                except Exception as exc:             # a bad request must not stop the server
                    reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                try:
                    conn.sendall(json.dumps(reply).encode() + b"\n")
                except OSError:
                    pass

    def watch_owner(self, owner: int) -> None:
        while True:
            time.sleep(0.5)
            try:
                os.kill(owner, 0)
            except ProcessLookupError:
                log.warning("owner %d is gone: unmounting", owner)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    def run(self, owner: int | None) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind("\0" + self.socket_name)
        sock.listen(16)
        threading.Thread(target=self.serve_control, args=(sock,), daemon=True).start()
        if owner:
            threading.Thread(target=self.watch_owner, args=(owner,), daemon=True).start()
        info = {"pid": os.getpid(), "socket": self.socket_name, "mountpoint": self.mountpoint,
                "backing": self.backing}
        tmp = os.path.join(self.state_dir, SERVER_FILE + ".tmp")
        with open(tmp, "w") as f:
            json.dump(info, f)
        os.replace(tmp, os.path.join(self.state_dir, SERVER_FILE))
        # No writeback cache and no kernel_cache: every write reaches this process at once, and
        # the page cache is dropped on open. hard_remove: unlink is ours, no .fuse_hidden files.
        try:
            mfusepy.FUSE(self.ops, self.mountpoint, foreground=True, nothreads=False,
                         hard_remove=True, fsname="faultfs", subtype="faultfs",
                         default_permissions=True)
        except RuntimeError as exc:
            if exc.args != (_STOPPED_BY_SIGNAL,):
                raise
        if self.power_loss is not None:
            result = self.log.power_loss(self.power_loss["mode"], self.power_loss["seed"])
            log.info("power loss: %s", result)
        else:
            self.log.settle()
            result = None
        if result is not None:
            with open(os.path.join(self.state_dir, POWER_LOSS_FILE), "w") as f:
                json.dump(result, f)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="faultfs-server")
    parser.add_argument("backing")
    parser.add_argument("mountpoint")
    parser.add_argument("state_dir")
    parser.add_argument("--owner-pid", type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if os.environ.get("GFS_FAULTFS_DEBUG") else logging.INFO,
                        stream=sys.stderr,
                        format="%(asctime)s faultfs %(levelname)s %(message)s")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    Server(args.backing, args.mountpoint, args.state_dir).run(args.owner_pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
