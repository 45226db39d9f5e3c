"""Repair benchmark in the suite: bench.repair.run (a chunkserver holding the most data is
killed; time to full redundancy, MB/s re-replicated, what a concurrent reader keeps), for each
repair setting and repetition, beside the raw disk write rate that bench.repair measures in
the same run.

    ./run.sh bench repair [--size 4GiB] [--chunkservers 4] [--configs 2:0,4:0,4:100MiB]
"""
from __future__ import annotations

from bench import repair
from bench.common import MB, keep_peaks, num, parse_size, ratio, rng, spread, table
from bench.suite import Context, Option

NAME = "repair"
TITLE = "re-replication after a chunkserver is lost"
FULL = {"size": 4 << 30, "chunkservers": 4, "configs": [(2, 0), (4, 0), (4, 100 << 20)],
        "reps": 3}
QUICK = {"size": 256 << 20, "chunkservers": 4, "configs": [(4, 0)], "reps": 1}


def parse_configs(text: str, flag: str = "--configs",
                  example: str = "2:0,4:100MiB") -> list[tuple[int, int]]:
    """'2:0,4:100MiB' -> [(2, 0), (4, 104857600)]: repair concurrency : rate cap (0 = none)
    (also other CONCURRENCY:RATE options, named `flag` in the error)."""
    usage = f"{flag} wants CONCURRENCY:RATE,... (e.g. {example}), not {text!r}"
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items or any(":" not in i or not i.split(":")[0].isdigit() for i in items):
        raise ValueError(usage)
    configs = [(int(c), parse_size(r)) for c, r in (i.split(":", 1) for i in items)]
    if min(c for c, _ in configs) < 1:
        raise ValueError(usage)
    return configs


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 2:
        raise ValueError(f"--chunkservers needs a whole number of at least 2, not {text!r}")
    return int(text)


OPTIONS = [Option("--size", "size", parse_size, "bytes stored before the kill, e.g. 4GiB"),
           Option("--chunkservers", "chunkservers", _count, "chunkservers (at least 4 for r=3)"),
           Option("--configs", "configs", parse_configs,
                  "repair concurrency:rate cap pairs, e.g. 2:0,4:100MiB")]

KEYS = ("repair_mb_s", "disk_write_mb_s", "reader_during_mb_s", "reader_unloaded_mb_s",
        "full_redundancy_s", "detect_s", "victim_bytes")


def run(cfg: dict, ctx: Context) -> dict:
    settings = []
    processes: dict[str, dict] = {}
    for concurrency, rate in cfg["configs"]:
        runs = []
        for rep in range(cfg["reps"]):
            print(f"  repair: {concurrency} copies at once, rate cap "
                  f"{f'{rate / MB:.0f} MB/s' if rate else 'none'}, repetition {rep + 1}",
                  flush=True)
            runs.append(repair.run(cfg["size"], cfg["chunkservers"], concurrency, rate, ctx.work))
            keep_peaks(processes, runs[-1]["processes"])
        kept = [r["reader_during_mb_s"] / r["reader_unloaded_mb_s"] for r in runs
                if r["reader_unloaded_mb_s"]]
        settings.append({"concurrency": concurrency, "rate_limit": rate,
                         **{k: spread([r[k] for r in runs]) for k in KEYS},
                         "reader_kept": spread(kept),
                         "repaired": sum(r["repaired"] for r in runs),
                         "repair_failures": sum(r["repair_failures"] for r in runs),
                         "runs": runs})
    return {"settings": settings, "processes": processes}


def report(res: dict, refs: dict) -> str:
    rows = []
    for s in res["settings"]:
        m = {k: s[k]["median"] for k in KEYS}
        rows.append([_label(s), num(m["victim_bytes"] / MB),
                     num(m["repair_mb_s"]), rng(s["repair_mb_s"]),
                     ratio(m["repair_mb_s"], m["disk_write_mb_s"]),
                     ratio(m["repair_mb_s"], refs["disk_write_mb_s"]["median"]),
                     f"{num(m['reader_during_mb_s'])} / {num(m['reader_unloaded_mb_s'])}",
                     num(s["reader_kept"]["median"], 2), num(m["detect_s"], 1),
                     num(m["full_redundancy_s"], 1), rng(s["full_redundancy_s"], 1),
                     f"{s['repaired']} / {s['repair_failures']}"])
    cfg = res["config"]
    return (f"{cfg['chunkservers']} chunkservers, {cfg['size'] / MB:,.0f} MB stored at "
            f"replication 3, the chunkserver holding the most killed (SIGKILL) and declared dead "
            f"after {repair.DEAD_AFTER:g} s; {cfg['reps']} repetition(s) per setting, each on a "
            f"fresh cluster (bench/repair.py). References: raw disk write (1 MiB writes + "
            f"fdatasync) measured by the repair run itself, and at the start of this run.\n\n"
            + table(["copies at once / rate cap", "lost MB", "repair MB/s", "range",
                     "× raw write (repair run)", "× raw write (run start)",
                     "reader MB/s during / unloaded", "reader kept", "kill → dead s",
                     "kill → full redundancy s", "range", "copies ok / failed"], rows))


def _label(s: dict) -> str:
    cap = f"{s['rate_limit'] / MB:.0f} MB/s" if s["rate_limit"] else "none"
    return f"{s['concurrency']} / {cap}"


def figures(res: dict, refs: dict) -> list[dict]:
    series = {_label(s): [r["repair_mb_s"] for r in s["runs"]] for s in res["settings"]}
    return [{"kind": "distribution", "name": "repair", "ylabel": "MB/s",
             "title": "repair MB/s, every run (copies at once / rate cap)",
             "panels": {"repair MB/s": series}}]
