"""Shared pieces of the benchmarks: physical limits, percentiles, tables, result files."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(p / 100 * (len(s) - 1)))))
    return s[k]


def fsync_ceiling(directory: str, seconds: float = 2.0, size: int = 200) -> dict:
    """The disk's durable-write rate: append `size` bytes + fdatasync in a loop."""
    path = os.path.join(directory, ".fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    lat = []
    buf = b"x" * size
    end = time.perf_counter() + seconds
    try:
        while time.perf_counter() < end:
            t = time.perf_counter()
            os.write(fd, buf)
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        os.unlink(path)
    return {"ops_s": len(lat) / seconds, "p50_ms": percentile(lat, 50) * 1e3,
            "p99_ms": percentile(lat, 99) * 1e3}


def machine() -> dict:
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "memory_bytes": mem, "python": platform.python_version(),
            "kernel": platform.release(), "machine": platform.machine()}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(headers: list[str], rows: list[list]) -> str:
    """A Markdown table."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in cells[1:]])


def process_table(processes: dict[str, dict]) -> str:
    """Peak RSS and CPU seconds per process (`None` figures shown as '?')."""
    fmt = lambda v, scale: "?" if v is None else f"{v / scale:.0f}"
    return table(["process", "peak RSS MiB", "CPU s"],
                 [[k, fmt(v["peak_rss"], 1 << 20), fmt(v["cpu_s"], 1)]
                  for k, v in processes.items()])


def save_results(name: str, payload: dict) -> Path:
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{time.strftime('%Y-%m-%d')}-{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    return path
