"""Closed-loop load from several client processes (not one GIL): each of `concurrency` threads
runs one operation after another for a warm-up, then for the measured window.

The operation comes from a factory named "module:function", called in every thread before the
clock starts as `factory(spec, worker_id) -> (op, close)`; `op()` does one operation (raises on
failure), `close()` releases the thread's client. The same pool, and so the same kind of
client process, drives gfs and etcd alike.
"""
from __future__ import annotations

import importlib
import multiprocessing as mp
import queue
import threading
import time
from collections.abc import Callable

from bench.common import median, percentile, spread

PROCESSES = 4       # client processes of a pool (a job with fewer threads uses fewer)
READY_TIMEOUT = 120.0


def _factory(name: str):
    module, func = name.split(":")
    return getattr(importlib.import_module(module), func)


def _job(index: int, job: dict, jobs, results) -> None:
    make = _factory(job["factory"])
    threads = job["threads"]
    ready = threading.Barrier(threads + 1)
    go = threading.Event()
    window: list[float] = [0.0, 0.0]
    lock = threading.Lock()
    lat: list[float] = []
    errors: list[str] = []
    setup_errors: list[str] = []

    def run(tid: int) -> None:
        mine: list[float] = []
        fails: list[str] = []
        try:
            op, close = make(job["spec"], f"{job['tag']}-p{index}-t{tid}")
        except Exception as err:                       # reported, the job fails
            setup_errors.append(f"{type(err).__name__}: {err}")
            ready.wait()
            return
        try:
            ready.wait()
            go.wait()
            start, stop = window
            while (t0 := time.monotonic()) < stop:
                try:
                    op()
                except Exception as err:               # counted, the first one shown
                    if t0 >= start:
                        fails.append(f"{type(err).__name__}: {err}")
                    continue
                t1 = time.monotonic()
                if t0 >= start and t1 <= stop:
                    mine.append(t1 - t0)
        finally:
            close()
        with lock:
            lat.extend(mine)
            errors.extend(fails)

    ts = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(threads)]
    for t in ts:
        t.start()
    ready.wait()
    if setup_errors:
        results.put(("failed", index, setup_errors[0]))
        window[:] = [0.0, 0.0]
        go.set()
    else:
        results.put(("ready", index, ""))
        t_go = jobs.get()
        window[:] = [t_go + job["warmup"], t_go + job["warmup"] + job["seconds"]]
        while time.monotonic() < t_go:
            time.sleep(0.001)
        go.set()
    for t in ts:
        t.join()
    if not setup_errors:
        results.put(("done", index, (lat, len(errors), errors[:1])))


def _worker(index: int, jobs, results) -> None:
    while (job := jobs.get()) is not None:
        _job(index, job, jobs, results)


class LoadPool:
    """`processes` spawned client processes that run jobs for `measure`."""

    def __init__(self, processes: int = PROCESSES):
        ctx = mp.get_context("spawn")
        self._results = ctx.Queue()
        self._jobs = [ctx.Queue() for _ in range(processes)]
        self._procs = [ctx.Process(target=_worker, args=(i, q, self._results), daemon=True)
                       for i, q in enumerate(self._jobs)]
        for p in self._procs:
            p.start()

    def pids(self) -> list[int]:
        """The client processes' PIDs (for their CPU)."""
        return [p.pid for p in self._procs]

    def close(self) -> None:
        for q in self._jobs:
            q.put(None)
        for p in self._procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()

    def __enter__(self) -> LoadPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _get(self, timeout: float):
        end = time.monotonic() + timeout
        while True:
            try:
                return self._results.get(timeout=1)
            except queue.Empty:
                dead = [i for i, p in enumerate(self._procs) if not p.is_alive()]
                if dead:
                    raise RuntimeError(f"load client process {dead[0]} died") from None
                if time.monotonic() > end:
                    raise RuntimeError("load client processes did not answer") from None

    def measure(self, factory: str, spec: dict, concurrency: int, seconds: float,
                warmup: float, tag: str) -> dict:
        """Run `concurrency` threads of `factory`'s operation; ops/s and latency percentiles
        of the operations that started and ended inside the measured window."""
        n = min(len(self._procs), concurrency)
        per = [concurrency // n + (1 if i < concurrency % n else 0) for i in range(n)]
        for i, threads in enumerate(per):
            self._jobs[i].put({"factory": factory, "spec": spec, "threads": threads,
                               "seconds": seconds, "warmup": warmup, "tag": tag})
        replies = [self._get(READY_TIMEOUT) for _ in range(n)]
        failed = [msg for kind, _, msg in replies if kind == "failed"]
        t_go = time.monotonic() + 0.05
        for kind, i, _ in replies:
            if kind == "ready":
                self._jobs[i].put(t_go)
        done = [self._get(READY_TIMEOUT + seconds + warmup)
                for kind, _, _ in replies if kind == "ready"]
        if failed:
            raise RuntimeError(f"{tag}: a client could not start: {failed[0]}")
        lat = [x for _, _, (part, _, _) in done for x in part]
        errors = sum(e for _, _, (_, e, _) in done)
        first = next((f[0] for _, _, (_, _, f) in done if f), "")
        return {"ops_s": len(lat) / seconds, "p50_ms": percentile(lat, 50) * 1e3,
                "p90_ms": percentile(lat, 90) * 1e3, "p99_ms": percentile(lat, 99) * 1e3,
                "ops": len(lat), "errors": errors, "first_error": first}


def summarize(op: str, concurrency: int, runs: list[dict]) -> dict:
    """One point of a sweep: ops/s median and min–max over the repetitions, median latencies."""
    return {"op": op, "concurrency": concurrency,
            "ops_s": spread([r["ops_s"] for r in runs]),
            **{k: median([r[k] for r in runs]) for k in ("p50_ms", "p90_ms", "p99_ms")},
            "errors": sum(r["errors"] for r in runs),
            "first_error": next((r["first_error"] for r in runs if r["first_error"]), ""),
            "runs": runs}


def sweep(pool: LoadPool, factory: str, spec_of: Callable[[str, int, int], dict],
          ops: list[str], concurrencies: list[int], reps: int, seconds: float, warmup: float,
          label: str) -> list[dict]:
    """Every op at every concurrency, `reps` times each; `spec_of(op, concurrency, rep)` makes
    (and may prepare, e.g. a fresh directory for creates) the spec of one measurement."""
    points = []
    for op in ops:
        for conc in concurrencies:
            runs = [pool.measure(factory, spec_of(op, conc, rep), conc, seconds, warmup,
                                 f"{op}{conc}r{rep}") for rep in range(reps)]
            points.append(summarize(op, conc, runs))
            p = points[-1]
            err = f", {p['errors']} errors (first: {p['first_error']})" if p["errors"] else ""
            print(f"  {label} {op} c={conc}: {p['ops_s']['median']:.0f} ops/s, "
                  f"p50 {p['p50_ms']:.2f} ms{err}", flush=True)
    return points
