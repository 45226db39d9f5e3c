"""The chaos suite's running record (bench/results/chaos-record.json) and long, resumable runs.

    ./run.sh chaos --hours N [--segment-minutes 10] [--seed S]

A long run is a *campaign* of segments: each segment is an ordinary chaos run (its own cluster,
seed = campaign seed + segment number) of `--segment-minutes`, and is appended to the record as
soon as it has been judged. The same command run again after an interruption (Ctrl-C, a reboot)
resumes the unfinished campaign where its last judged segment ended; a segment cut short is not
counted. A segment that fails (a loss, a history not linearizable, no full redundancy) is
recorded and ends the campaign with exit status 1; its directory is kept.

The record holds every segment and the totals over all of them: time under faults, faults by
kind, master kills, whole-cluster power losses, operations, acknowledged, lost, runs
linearizable / not. `--record-only` runs add one ordinary run (`--minutes`) to it too.

With a porcupine checker configured (bench/chaos/crosscheck.py), every `--cross-check-every`-th
segment (the first, then every K-th) is also checked by porcupine, and its verdict recorded in
the segment; porcupine finding a violation, or disagreeing with ours, fails the segment. Without
one the campaign says so when it starts and records why in the campaign.
"""
from __future__ import annotations

import datetime
import json
import os
import random
from pathlib import Path
from typing import Callable

from bench.chaos.crosscheck import NOT_CONFIGURED

RECORD = Path(__file__).resolve().parent.parent / "results" / "chaos-record.json"
SUMS = ("seconds", "operations", "acknowledged", "lost", "master_kills",
        "whole_cluster_power_losses")


def load(path: Path = RECORD) -> dict:
    if path.exists():
        return json.loads(path.read_text())
    return {"campaigns": []}


def save(record: dict, path: Path = RECORD) -> None:
    """Write atomically (an interrupted write never leaves a truncated record)."""
    record["totals"] = totals(record)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    tmp.replace(path)


def segment_entry(summary: dict) -> dict:
    """What the record keeps of one judged run (its time: the seconds under faults)."""
    return {"seed": summary["seed"], "minutes": summary["minutes"],
            "seconds": summary["fault_seconds"],
            "finished": now_iso(), "faults": {k: v for k, v in summary["faults"].items() if v},
            "master_kills": summary["master_kills"],
            "whole_cluster_power_losses": summary["whole_cluster_power_losses"],
            "operations": summary["operations"], "acknowledged": summary["acknowledged"],
            "lost": summary["lost"], "linearizable": summary["linearizable"],
            "unclean_errors": summary.get("unclean_errors", 0),
            "disks": "faultfs" if summary.get("faultfs") else "bare",
            "full_redundancy": summary["full_redundancy_s"] is not None,
            **({"kept": summary["kept"]} if summary.get("kept") else {})}


def totals(record: dict) -> dict:
    segments = [s for c in record["campaigns"] for s in c["segments"]]
    out: dict = {k: 0 for k in SUMS}
    faults: dict[str, int] = {}
    for s in segments:
        for k in SUMS:
            out[k] += s[k]
        for kind, n in s["faults"].items():
            faults[kind] = faults.get(kind, 0) + n
    out["seconds"] = round(out["seconds"], 1)
    out.update(errored_runs=sum(1 for c in record["campaigns"] if c.get("errored")),
               runs=len(segments), hours=round(out["seconds"] / 3600, 2),
               linearizable_runs=sum(1 for s in segments if s["linearizable"] is True),
               not_linearizable_runs=sum(1 for s in segments if s["linearizable"] is not True),
               faults=dict(sorted(faults.items())), total_faults=sum(faults.values()))
    # Runs on FaultFS: their power losses cut every byte not durable (the older, "bare" runs
    # cut only the masters' journals).
    on_faultfs = [s for s in segments if s.get("disks") == "faultfs"]
    out["faultfs"] = {"runs": len(on_faultfs),
                      "hours": round(sum(s["seconds"] for s in on_faultfs) / 3600, 2),
                      **{k: sum(s[k] for s in on_faultfs) for k in SUMS if k != "seconds"},
                      "unclean_errors": sum(s.get("unclean_errors", 0) for s in segments)}
    checked = [s["cross_check"] for s in segments if "cross_check" in s]
    out["cross_check"] = {"segments": len(checked),
                          "agree": sum(1 for x in checked if x.get("agree") is True),
                          "disagree": sum(1 for x in checked if x.get("agree") is False),
                          "inconclusive": sum(1 for x in checked
                                              if "error" not in x and x.get("agree") is None),
                          "errors": sum(1 for x in checked if "error" in x)}
    return out


def cross_check_failed(entry: dict) -> bool:
    """Did a segment's porcupine cross-check find a violation or disagree with ours? (A
    cross-check that could not run, or ran out of time, is recorded but fails nothing.)"""
    x = entry.get("cross_check") or {}
    return x.get("porcupine") == "illegal" or x.get("agree") is False


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def open_campaign(record: dict, hours: float, seed: int | None) -> dict:
    """The unfinished campaign to resume, or a new one."""
    if record["campaigns"]:
        last = record["campaigns"][-1]
        if not last["finished"] and last["target_hours"] == hours:
            return last
    campaign = {"started": now_iso(), "target_hours": hours, "finished": False,
                "seed": seed if seed is not None else random.randrange(1 << 30), "segments": []}
    record["campaigns"].append(campaign)
    return campaign


def campaign(hours: float, segment_minutes: float, seed: int | None,
             run_segment: Callable[[float, int], dict],
             path: Path = RECORD, cross_check: Callable[[int], dict] | None = None,
             cross_check_every: int = 4) -> int:
    """Run (or resume) a campaign of `hours`; returns the exit status. `cross_check(seed)`
    (bench/chaos/crosscheck.py's segment_cross_check), when given and `cross_check_every` > 0,
    cross-checks segments 0, K, 2K, ... with porcupine."""
    record = load(path)
    c = open_campaign(record, hours, seed)
    checking = cross_check is not None and cross_check_every > 0
    c.pop("cross_check", None)          # (a resumed campaign: what is true now)
    if not checking:
        c["cross_check"] = NOT_CONFIGURED if cross_check is None else \
            "porcupine cross-check off (--cross-check-every 0)"
    save(record, path)
    done = sum(s["seconds"] for s in c["segments"])
    print(f"chaos: campaign of {hours:g} h started {c['started']}, seed {c['seed']}: "
          f"{done / 3600:.2f} h done, {len(c['segments'])} segments; "
          + c.get("cross_check", f"porcupine cross-check every {cross_check_every} segments"),
          flush=True)
    while done < hours * 3600:
        minutes = min(segment_minutes, max(1.0, (hours * 3600 - done) / 60))
        index = len(c["segments"])
        try:
            entry = segment_entry(run_segment(minutes, c["seed"] + index))
        except Exception as err:        # the run stopped before its checks: not judged, failed
            c.update(finished=True, failed=True,
                     errored={"seed": c["seed"] + index, "at": now_iso(),
                              "error": f"{type(err).__name__}: {err}"[:500]})
            save(record, path)
            print(f"chaos: campaign FAILED: segment {index + 1} (seed {c['seed'] + index}) "
                  f"stopped with an error: {type(err).__name__}: {err}", flush=True)
            return 1
        if checking and index % cross_check_every == 0:
            entry["cross_check"] = cross_check(entry["seed"])     # type: ignore[misc]
            print(f"chaos: porcupine cross-check of segment {index + 1} (seed "
                  f"{entry['seed']}): {json.dumps(entry['cross_check'])}", flush=True)
        c["segments"].append(entry)
        done += entry["seconds"]
        failed = entry["lost"] or entry["linearizable"] is not True or \
            not entry["full_redundancy"] or entry["unclean_errors"] or cross_check_failed(entry)
        if failed:
            c["finished"] = True
            c["failed"] = True
        save(record, path)
        if failed:
            print(f"chaos: campaign FAILED at segment {len(c['segments'])} (seed {entry['seed']})")
            return 1
    c["finished"] = True
    save(record, path)
    print(f"chaos: campaign done: {done / 3600:.2f} h; record totals: "
          f"{json.dumps(record['totals'])}")
    return 0


def add_run(summary: dict, path: Path = RECORD) -> None:
    """Append one ordinary run to the record (as a campaign of one segment)."""
    record = load(path)
    entry = segment_entry(summary)
    record["campaigns"].append({"started": now_iso(),
                                "target_hours": round(entry["seconds"] / 3600, 3),
                                "finished": True, "seed": summary["seed"], "segments": [entry]})
    save(record, path)
