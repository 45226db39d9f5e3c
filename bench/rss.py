"""Resident memory of running processes, sampled over time from /proc (a background thread),
and the CPU time they used."""
from __future__ import annotations

import os
import resource
import threading
import time


def rss(pid: int) -> int:
    """Resident bytes of one process (VmRSS), 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0


def tree_pids(pid: int) -> list[int]:
    """`pid` and its descendants (nginx's and the gateway's workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def tree_rss(pids: list[int]) -> int:
    return sum(rss(p) for p in pids)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by the processes (those gone count 0)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                utime, stime = f.read().rsplit(")", 1)[1].split()[11:13]
            total += int(utime) + int(stime)
        except (OSError, ValueError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


class Sampler:
    """Samples the summed RSS of `pids` every `interval` seconds while running:
    `points` is [(seconds since `t0`, bytes), ...]; `mark(label)` notes a moment."""

    def __init__(self, pids: list[int], interval: float = 0.2, t0: float | None = None):
        self.pids = pids
        self.interval = interval
        self.t0 = time.monotonic() if t0 is None else t0
        self.points: list[tuple[float, int]] = []
        self.marks: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="rss-sampler")

    def _loop(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                return

    def sample(self) -> int:
        value = tree_rss(self.pids)
        self.points.append((time.monotonic() - self.t0, value))
        return value

    def mark(self, label: str) -> float:
        t = time.monotonic() - self.t0
        self.marks.append((t, label))
        return t

    def between(self, start: float, end: float) -> list[int]:
        return [v for t, v in self.points if start <= t <= end]

    @property
    def peak(self) -> int:
        return max((v for _, v in self.points), default=0)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def raise_nofile() -> int:
    """Raise this process's open-file limit to its hard limit (children inherit it); returns
    the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard
