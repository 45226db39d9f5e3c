"""Load figures a daemon reports about itself: disk busy time, CPU load, resident memory."""
from __future__ import annotations

import os
import time


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def cpu_load() -> float:
    """1-minute load average per core."""
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        return 0.0


def _block_device_name(path: str) -> str | None:
    """The /proc/diskstats name of the device holding `path` (partition resolved to its disk)."""
    st = os.stat(path)
    sys_path = f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    try:
        real = os.path.realpath(sys_path)
    except OSError:
        return None
    name = os.path.basename(real)
    return name if os.path.exists(f"/sys/block/{name}") or os.path.exists(real) else None


class DiskBusy:
    """Fraction of wall time the disk under `path` was busy between two calls (0..1)."""

    def __init__(self, path: str):
        self.device = _block_device_name(path)
        self._last = self._sample()

    def _sample(self) -> tuple[float, int] | None:
        if not self.device:
            return None
        try:
            with open("/proc/diskstats") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) > 12 and parts[2] == self.device:
                        return time.monotonic(), int(parts[12])
        except OSError:
            pass
        return None

    def fraction(self) -> float:
        now = self._sample()
        last, self._last = self._last, now
        if not now or not last or now[0] <= last[0]:
            return 0.0
        return max(0.0, min(1.0, (now[1] - last[1]) / 1000.0 / (now[0] - last[0])))


def host_memory() -> tuple[int, int]:
    """(total, available) bytes of this host's memory, from /proc/meminfo ((0, 0) if unknown).
    Available counts what the kernel can hand out without swapping (free + reclaimable cache)."""
    fields: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in ("MemTotal", "MemAvailable"):
                    fields[name] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return 0, 0
    return fields.get("MemTotal", 0), fields.get("MemAvailable", 0)
