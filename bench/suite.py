"""The benchmark suite runner: measure the machine's limits once, run each chosen benchmark
against its own fresh local cluster, then write bench/results/<date>.json, the Markdown report
<date>.md and the plots <date>-*.png.

A benchmark is a module with NAME, TITLE, QUICK and FULL (its settings per profile), OPTIONS
(command-line overrides of those settings), `run(cfg, ctx) -> dict`,
`report(result, refs) -> str` and `figures(result, refs) -> list[dict]` (see bench/plots.py).
A benchmark made of independent parts may return a result with "part_errors" (one line per
failed part; its report says why): the run then counts it as failed like one that raised.
"""
from __future__ import annotations

import importlib
import json
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import refs as refs_mod
from bench.common import RESULTS, GiB, machine

MODULES = {"metadata": "bench.metadata", "datapath": "bench.datapath",
           "smallfiles": "bench.smallfiles", "failover": "bench.failover",
           "repair": "bench.repair_suite", "tiering": "bench.tiering", "mount": "bench.mount",
           "auth_cost": "bench.auth_cost", "gateway": "bench.gateway",
           "gateway_memory": "bench.gateway_memory"}
REFS = {"quick": {"disk_size": 64 << 20, "fsync_seconds": 1.0, "reps": 1},
        "full": {"disk_size": GiB, "fsync_seconds": 2.0, "reps": 3}}


@dataclass
class Option:
    """A command-line override of one setting of a benchmark (raw text, parsed per benchmark)."""
    flag: str
    key: str
    parse: Callable[[str], Any]
    help: str


@dataclass
class Context:
    work: str                   # a temporary directory on the disk under test
    refs: dict                  # the machine's limits measured at the start of this run
    seed: int = 7
    etcd: bool = True           # False: --no-etcd
    profile: str = "full"
    notes: list[str] = field(default_factory=list)


def module(name: str):
    return importlib.import_module(MODULES[name])


def config(name: str, profile: str, given: dict[str, str], reps: int | None) -> dict:
    """A benchmark's settings: its profile's, overridden by the options given that it has."""
    mod = module(name)
    cfg = dict(mod.QUICK if profile == "quick" else mod.FULL)
    for opt in mod.OPTIONS:
        if given.get(opt.flag) is not None:
            cfg[opt.key] = opt.parse(given[opt.flag])
    if reps is not None and "reps" in cfg:
        cfg["reps"] = reps
    return cfg


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def run(names: list[str], profile: str = "full", given: dict[str, str] | None = None,
        reps: int | None = None, seed: int = 7, data_dir: str | None = None,
        out_dir: str | Path | None = None, etcd: bool = True) -> dict:
    """Run the named benchmarks; returns {"payload", "json", "markdown", "plots", "failed"}."""
    from bench import plots, report
    given = given or {}
    cfgs = {n: config(n, profile, given, reps) for n in names}     # bad options fail first
    out = Path(out_dir or RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    stem = time.strftime("%Y-%m-%d")
    started = time.monotonic()
    work = tempfile.mkdtemp(prefix="gfs-bench-", dir=data_dir)
    failed: list[str] = []
    try:
        rc = dict(REFS[profile])
        if reps is not None:
            rc["reps"] = reps
        print(f"bench: {profile} profile, {', '.join(names)}; machine limits first "
              f"(in {work})", flush=True)
        ctx = Context(work=work, refs=refs_mod.measure(work, rc["disk_size"], rc["fsync_seconds"],
                                                       rc["reps"]),
                      seed=seed, etcd=etcd, profile=profile)
        results: dict[str, dict] = {}
        for name in names:
            mod = module(name)
            print(f"bench: {name} — {mod.TITLE}", flush=True)
            t = time.monotonic()
            try:
                res = mod.run(cfgs[name], ctx)
            except Exception as err:           # recorded; the run goes on and exits non-zero
                traceback.print_exc()
                res = {"error": f"{type(err).__name__}: {err}"}
                failed.append(name)
            if res.get("part_errors"):         # a part failed; the others are reported
                failed.append(name)
            res["config"] = cfgs[name]
            res["wall_s"] = time.monotonic() - t
            results[name] = res
            print(f"bench: {name} done in {res['wall_s']:.0f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    payload = _jsonable({"date": stem, "profile": profile, "seed": seed, "machine": machine(),
                         "refs_config": rc, "refs": ctx.refs, "notes": ctx.notes,
                         "suites": results, "wall_s": time.monotonic() - started})
    images = plots.render(payload, out, stem)
    json_path = out / f"{stem}.json"
    json_path.write_text(json.dumps(payload, indent=2))
    md_path = out / f"{stem}.md"
    md_path.write_text(report.render(payload, images))
    return {"payload": payload, "json": json_path, "markdown": md_path,
            "plots": [out / i for imgs in images.values() for i in imgs], "failed": failed}
