"""The disk faults a FaultFS mount injects, switched on and off through its control socket."""
from __future__ import annotations

import errno
import fnmatch
import random
import threading
import time
from dataclasses import dataclass, field

# Operation names an EIO rule can name (the FUSE operations they cover).
EIO_OPS = ("read", "write", "fsync", "open", "create", "truncate", "rename", "unlink", "mkdir",
           "readdir")


@dataclass
class Faults:
    """Current faults. `powered_off`: the power is out; every operation fails with EIO until the
    server exits (after a power_loss request, before the unmount)."""
    enospc: bool = False
    eio_glob: str | None = None
    eio_ops: frozenset[str] = frozenset()
    fsync_delay: tuple[float, float] = (0.0, 0.0)
    powered_off: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def check(self, op: str, path: str) -> None:
        """Raise EIO if the power is out or a rule covers (`op`, `path`); `path` is the path in
        the mount, "/a/b"."""
        if self.powered_off:
            raise OSError(errno.EIO, "FaultFS: the power is out")
        if self.eio_glob is not None and op in self.eio_ops and \
                fnmatch.fnmatchcase(path.lstrip("/"), self.eio_glob):
            self._count("eio")
            raise OSError(errno.EIO, f"FaultFS: injected EIO on {op}")

    def check_space(self) -> None:
        """Raise ENOSPC while the disk is "full" (called before anything that allocates)."""
        if self.enospc:
            self._count("enospc")
            raise OSError(errno.ENOSPC, "FaultFS: injected ENOSPC")

    def delay_fsync(self) -> None:
        low, high = self.fsync_delay
        if high > 0:
            self._count("fsync_delayed")
            time.sleep(random.uniform(low, high))

    def configure(self, request: dict) -> None:
        """Apply one control request: {"op": "enospc", "on": bool} | {"op": "eio", "glob": str
        or None, "ops": [...]} | {"op": "fsync_delay", "min": s, "max": s}."""
        op = request["op"]
        if op == "enospc":
            self.enospc = bool(request["on"])
        elif op == "eio":
            ops = frozenset(request.get("ops") or ())
            unknown = ops - set(EIO_OPS)
            if unknown:
                raise ValueError(f"unknown operations {sorted(unknown)}; known: {EIO_OPS}")
            self.eio_glob, self.eio_ops = request.get("glob"), ops
        elif op == "fsync_delay":
            low, high = float(request["min"]), float(request["max"])
            if not 0 <= low <= high:
                raise ValueError("fsync delay needs 0 <= min <= max")
            self.fsync_delay = (low, high)
        else:
            raise ValueError(f"unknown fault {op!r}")

    def describe(self) -> dict:
        return {"enospc": self.enospc, "eio": {"glob": self.eio_glob, "ops": sorted(self.eio_ops)},
                "fsync_delay": list(self.fsync_delay), "powered_off": self.powered_off,
                "injected": dict(self.counts)}
