"""The Markdown report of a run: the machine and its limits, then each benchmark's table
(from the benchmark's own `report`) with its plots, then the daemons' memory and CPU."""
from __future__ import annotations

from bench import refs as refs_mod
from bench.common import GiB, num, ratio, rng, table

RSS_TARGET = 300 << 20


def references(refs: dict) -> str:
    rows = [[what, num(refs[key]["median"], 2 if "cpu" in key else 0),
             rng(refs[key], 2 if "cpu" in key else 0), unit]
            for key, what, unit in refs_mod.ROWS if key in refs]     # (older runs lack some)
    return table(["machine limit (measured at the start of this run)", "median", "range", "unit"],
                 rows)


def resources(suites: dict, refs: dict) -> str:
    """Peak RSS and CPU of every daemon of every benchmark; CPU per unit of work where the
    benchmark counts one (GiB moved by clients, or operations done), beside one process's own
    CPU cost of a GiB over loopback and, for etcd's rows, the peer's."""
    floor = refs["loopback_cpu_s_per_gib"]["median"]
    rows = []
    for name, res in suites.items():
        for system, procs, part in _processes(res):
            for proc, st in procs.items():
                cpu, rss = st["cpu_s"], st["peak_rss"]
                work, per = "–", "–"
                if cpu is not None and part.get("bytes_moved"):
                    per_gib = cpu * GiB / part["bytes_moved"]
                    work = f"{num(per_gib, 2)} s/GiB"
                    per = f"{ratio(per_gib, floor, 1)} × loopback"
                elif cpu is not None and part.get("ops_done"):
                    work = f"{num(cpu * 1e3 / part['ops_done'], 2)} ms/op"
                rows.append([name, system, proc, num(rss and rss / (1 << 20)),
                             "" if rss is None else ("yes" if rss < RSS_TARGET else "**no**"),
                             num(cpu, 1), work, per])
    if not rows:
        return "No daemon figures were recorded."
    return (table(["benchmark", "system", "process", "peak RSS MiB", "< 300 MiB", "CPU s",
                   "CPU per work", "reference"], rows)
            + "\n\nCPU s is each daemon's user+system time over the whole benchmark (set-up "
              "and warm-ups included); CPU per work divides it by the GiB that clients put and "
              "got (data path) or by the operations measured (metadata, small files). The reference for "
              f"a GiB is one Python process sending and receiving it on loopback "
              f"({num(floor, 2)} CPU s/GiB); etcd's rows are the peer's figures.")


def _processes(res: dict):
    """(system, {process: figures}, the part of the result they belong to)."""
    if "error" in res:
        return
    for system in ("gfs", "etcd"):
        part = res.get(system)
        if isinstance(part, dict) and part.get("processes"):
            yield system, part["processes"], part
    if res.get("processes"):
        yield "gfs", res["processes"], res


def render(payload: dict, images: dict[str, list[str]]) -> str:
    from bench import suite
    m = payload["machine"]
    intro = (f"Machine: {m['cpus']} cores, {m['memory_bytes'] / GiB:.0f} GiB, "
             f"Python {m['python']}, kernel {m['kernel']}; everything on one machine over "
             f"loopback. Seed {payload['seed']}; whole run {payload['wall_s'] / 60:.1f} min. "
             "Every figure is the median of its repetitions with the min–max range beside it, "
             "next to a reference measured in this same run: a machine limit and, where one "
             "exists, a real peer (etcd). Machines are noisy: read the ratios. "
             "1 MB = 10^6 bytes. How each figure is measured: docs/benchmarks.md.")
    lines = [f"# gfs benchmarks — {payload['date']} ({payload['profile']} profile)", "",
             intro, ""]
    lines += [f"> {note}" for note in payload["notes"]] + ([""] if payload["notes"] else [])
    lines += ["## Machine limits", "", references(payload["refs"]), ""]
    for name, res in payload["suites"].items():
        mod = suite.module(name)
        lines += [f"## {name}: {mod.TITLE}", ""]
        if "error" in res:
            lines += [f"**Failed:** {res['error']}", ""]
            continue
        lines += [mod.report(res, payload["refs"]), "",
                  f"Wall time {res['wall_s']:.0f} s.", ""]
        lines += [f"![{img}]({img})" for img in images.get(name, [])]
        lines += [""] if images.get(name) else []
    lines += ["## Daemons: peak memory and CPU", "", resources(payload["suites"], payload["refs"]),
              ""]
    return "\n".join(lines)
