"""Load from `wrk` (HTTP/1.1) and `h2load` (HTTP/2, nghttp2-client): run one, read its figures.

wrk: requests/s, p99 from its `--latency` distribution, errors (socket errors and non-2xx).
`--new-conn` sends `Connection: close` so every request opens a TCP connection of its own
(wrk reconnects when a response says close). `wrk_count` runs wrk in slices until it has
made at least that many requests (wrk itself only knows durations: a Lua script can stop its
thread after N responses, but wrk then still waits out the whole duration).
h2load: requests/s from its summary; p99 from its per-request log file (h2load prints no
percentiles); failed requests counted from its summary.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass

from bench.common import percentile

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


@dataclass
class LoadResult:
    rps: float
    p99_ms: float
    requests: int
    errors: int
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"unreadable latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> LoadResult:
    """Figures from wrk's output (run with --latency)."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    p99 = re.search(r"^\s+99(?:\.000)?%\s+(\S+)", out, re.M)
    if not (rps and done and p99):
        raise RuntimeError(f"unreadable wrk output:\n{out[-1500:]}")
    errors = sum(int(x) for x in re.findall(
        r"(?:connect|read|write|timeout) (\d+)", out.split("Socket errors:", 1)[-1].split("\n")[0])
    ) if "Socket errors:" in out else 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    return LoadResult(rps=float(rps.group(1)), p99_ms=_ms(p99.group(1)),
                      requests=int(done.group(1)),
                      errors=errors, seconds=_ms(done.group(2) + done.group(3)) / 1e3)


def wrk(url: str, connections: int, seconds: float, threads: int = 1, new_conn: bool = False,
        timeout_s: float = 10.0) -> LoadResult:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
            "--latency", f"--timeout={timeout_s:g}s"]
    if new_conn:
        argv += ["-H", "Connection: close"]
    run = subprocess.run(argv + [url], capture_output=True, text=True, timeout=seconds + 60,
                         check=False)
    if run.returncode != 0:
        raise RuntimeError(f"wrk failed ({run.returncode}): {run.stderr.strip()[-500:]}")
    return parse_wrk(run.stdout)


def wrk_count(url: str, connections: int, count: int, new_conn: bool = False,
              slice_s: float = 10.0, on_slice=None) -> LoadResult:
    """wrk until `count` requests are done (a little more: the last slice is sized from the
    rate of the one before); p99 is the worst slice's, errors summed. `on_slice(done)` is
    called after each slice."""
    done, errors, seconds, p99, rate = 0, 0, 0.0, 0.0, 0.0
    while done < count:
        left = count - done
        span = min(slice_s, max(1.0, left / rate)) if rate else 2.0
        got = wrk(url, connections, span, new_conn=new_conn)
        if got.requests == 0:
            raise RuntimeError(f"wrk made no request in {span:.0f} s against {url}")
        done += got.requests
        errors += got.errors
        seconds += got.seconds
        p99 = max(p99, got.p99_ms)
        rate = got.rps
        if on_slice is not None:
            on_slice(done)
    return LoadResult(rps=done / seconds, p99_ms=p99, requests=done, errors=errors,
                      seconds=seconds)


def parse_h2load(out: str, log_lines: list[str]) -> LoadResult:
    rps = re.search(r"finished in ([\d.]+)(us|ms|s|m), ([\d.]+) req/s", out)
    req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                    r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    if not (rps and req):
        raise RuntimeError(f"unreadable h2load output:\n{out[-1500:]}")
    # log: start time (µs since the epoch), status, duration (µs) — one line per request
    durations = [int(line.split("\t")[2]) / 1e3 for line in log_lines if line.count("\t") >= 2]
    # "failed" counts every done request that did not succeed (a 4xx/5xx answer, a reset, a
    # timeout); "errored" and "timeout" are parts of it
    return LoadResult(rps=float(rps.group(3)), p99_ms=percentile(durations, 99),
                      requests=int(req.group(3)), errors=int(req.group(5)),
                      seconds=_ms(rps.group(1) + rps.group(2)) / 1e3)


def h2load(url: str, clients: int, streams: int, seconds: float, data_file: str | None = None,
           headers: list[str] | None = None, warmup_s: float = 0.0) -> LoadResult:
    """`clients` connections, `streams` concurrent streams on each, for `seconds`; with
    `data_file` every request is a POST of that file's bytes."""
    fd, log = tempfile.mkstemp(prefix="gfs-h2load-", suffix=".log")
    os.close(fd)
    argv = ["h2load", "-c", str(clients), "-m", str(streams), "-D", f"{max(1, round(seconds))}",
            "-t", "1", "--log-file", log]
    if warmup_s:
        argv += ["--warm-up-time", f"{max(1, round(warmup_s))}"]
    if data_file:
        argv += ["-d", data_file]
    for h in headers or []:
        argv += ["-H", h]
    try:
        run = subprocess.run(argv + [url], capture_output=True, text=True,
                             timeout=seconds + warmup_s + 60, check=False)
        with open(log) as f:
            lines = f.read().splitlines()
    finally:
        os.unlink(log)
    if run.returncode != 0:
        raise RuntimeError(f"h2load failed ({run.returncode}): {run.stderr.strip()[-500:]}")
    return parse_h2load(run.stdout, lines)
