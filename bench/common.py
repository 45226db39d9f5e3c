"""Shared pieces of the benchmarks: physical limits, percentiles, tables, result files."""
from __future__ import annotations

import json
import math
import os
import platform
import signal
import statistics
import time
from pathlib import Path

PIECE = 1 << 20          # bytes per read/write/send in the physical probes and the data path
MB = 1e6                 # throughput unit: 1 MB = 10^6 bytes
GiB = 1 << 30
RESULTS = Path(__file__).resolve().parent / "results"


def stop_cleanly_on_sigterm() -> None:
    """Make SIGTERM raise SystemExit in the main thread, so a benchmark stopped by a timeout or
    by its user unwinds its `finally` blocks and stops the clusters it started: their daemons
    run in sessions of their own and would otherwise live on (with ppid 1)."""
    def exit_now(signum: int, _frame) -> None:
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, exit_now)


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


def spread(values: list[float]) -> dict:
    """Median and min–max of repeated measurements."""
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}


def ratio(value: float, reference: float | None, digits: int = 2) -> str:
    """`value / reference` for a report cell; '–' when either is missing."""
    if value is None or not reference or math.isnan(value) or math.isnan(reference):
        return "–"
    return f"{value / reference:.{digits}f}"


def num(value: float | None, digits: int = 0) -> str:
    """A number for a report cell; '–' when missing."""
    return "–" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def rng(s: dict, digits: int = 0) -> str:
    """'min–max' of a `spread` (empty when there was one measurement)."""
    if math.isnan(s["min"]) or s["min"] == s["max"]:
        return ""
    return f"{s['min']:,.{digits}f}–{s['max']:,.{digits}f}"


def process_stats(pid: int | None) -> dict:
    """Peak RSS (VmHWM, bytes) and CPU seconds so far of a running process."""
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
        with open(f"/proc/{pid}/stat") as f:
            utime, stime = f.read().rsplit(")", 1)[1].split()[11:13]
    except (OSError, StopIteration, TypeError):
        return {"peak_rss": None, "cpu_s": None}
    return {"peak_rss": rss, "cpu_s": (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")}


def keep_peaks(seen: dict[str, dict], processes: dict[str, dict]) -> None:
    """Fold one cluster's `process_stats` per daemon into `seen`: the highest peak RSS and CPU
    seconds of each daemon name over several clusters (runs of one benchmark)."""
    for name, st in processes.items():
        peak = seen.setdefault(name, {"peak_rss": None, "cpu_s": None})
        for k in ("peak_rss", "cpu_s"):
            if st[k] is not None:
                peak[k] = max(peak[k] or 0, st[k])


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
    out = RESULTS
    out.mkdir(exist_ok=True)
    path = out / f"{time.strftime('%Y-%m-%d')}-{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    return path


def parse_ints(text: str) -> list[int]:
    """'1,16,64' -> [1, 16, 64] (each at least 1)."""
    try:
        values = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"not a list of whole numbers: {text!r} (example: 1,16,64)") from None
    if not values or min(values) < 1:
        raise ValueError(f"expected whole numbers of at least 1: {text!r}")
    return values


def parse_choices(text: str, allowed, what: str) -> list[str]:
    """'a, b' -> ['a', 'b'], each one of `allowed`; else a ValueError naming the first bad one."""
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise ValueError(f"unknown {what} {bad[0] if bad else text!r} "
                         f"(have: {', '.join(allowed)})")
    return names


def parse_sizes(text: str) -> list[int]:
    """'1MiB,64MiB,1GiB' -> bytes each."""
    from gfs.errors import InvalidArgument
    from gfs.units import parse_size
    try:
        return [parse_size(x) for x in str(text).split(",") if x.strip()]
    except InvalidArgument as err:
        raise ValueError(err.message if hasattr(err, "message") else str(err)) from None


def parse_size(text: str) -> int:
    """'64MiB' -> bytes."""
    sizes = parse_sizes(text)
    if len(sizes) != 1:
        raise ValueError(f"expected one size: {text!r} (example: 64MiB)")
    return sizes[0]


def parse_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number of seconds: {text!r}") from None
    if value <= 0:
        raise ValueError(f"expected a positive number of seconds: {text!r}")
    return value
