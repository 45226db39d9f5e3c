"""Where one client's committed write spends its time between the masters, phase by phase, read
from the masters' system calls.

    PYTHONPATH=. python -m bench.cpu_per_op --op create --clients 1 --perf-trace /tmp/t.txt
    PYTHONPATH=. python -m bench.write_phases /tmp/t.txt

`bench.cpu_per_op --perf-trace FILE` records `perf trace -T` (Linux perf) of the three masters
for a short window of the load. This module finds each write's path in it, anchored on system
calls that mark each hand-off: the leader's event loop waking the Raft thread for a new command
(a write to the pysyncobj pipe), the Raft thread sending the entry (`sendto`), a follower's
journal `fdatasync` and its acknowledgement (`sendto`), the leader reading it (`recvfrom`), the
leader's Raft thread handing the results back to the event loop (a write to an eventfd), the
reply going out (`sendmsg` by the event loop), the next request read from that socket, and the
next command. With one client the phases
follow each other, so their medians add up to the time per write — under tracing, which slows
every system call: read the shares, not the absolute times.
"""
from __future__ import annotations

import argparse
import collections
import re
import statistics
import sys
from typing import Iterable, NamedTuple

PHASES = ("command -> entry sent", "entry sent -> follower's fsync starts",
          "follower's fsync -> its ack sent", "ack sent -> leader reads it",
          "leader reads ack -> results handed to the event loop",
          "results handed over -> reply sent", "reply sent -> next request read (the client)",
          "request read -> command to the Raft thread (gRPC, event loop)")
_LINE = re.compile(r"\s*([\d.]+) \(\s*[\d.]*\s*(?:ms)?\):\s*\S+/(\d+) (\w+)\((.*)")
_JOURNAL = re.compile(r"(master-\d+)/raft/journal\.log")
_SOCKET = re.compile(r"<socket:\[(\d+)\]>")
LOOKAHEAD = 400           # system calls searched for the next step of one write


def _socket(args: str) -> str | None:
    m = _SOCKET.search(args)
    return m.group(1) if m else None


class Call(NamedTuple):
    ms: float
    tid: int
    name: str
    args: str


def parse(lines: Iterable[str]) -> list[Call]:
    """The system calls of a `perf trace -T` output, in time order."""
    calls = []
    for line in lines:
        m = _LINE.match(line)
        if m:
            calls.append(Call(float(m.group(1)), int(m.group(2)), m.group(3), m.group(4)))
    calls.sort()
    return calls


class Roles(NamedTuple):
    loop: int                  # the leader's event loop thread
    tick: int                  # the leader's Raft thread
    followers: frozenset       # the followers' Raft threads


def roles(calls: list[Call]) -> Roles:
    """Which thread is which: the Raft threads fsync their master's journal; the leader's event
    loop writes the pysyncobj pipe most; the leader's Raft thread also writes an eventfd."""
    journal: dict[str, set[int]] = collections.defaultdict(set)
    for c in calls:
        m = _JOURNAL.search(c.args)
        if m and c.name == "fdatasync":
            journal[m.group(1)].add(c.tid)
    pipes = collections.Counter(c.tid for c in calls if c.name == "write" and "<pipe:" in c.args)
    if not pipes:
        raise ValueError("no write to a pipe in the trace: was it taken under writes?")
    loop = pipes.most_common(1)[0][0]
    handing = {c.tid for c in calls if c.name == "write" and "eventfd" in c.args and c.tid != loop}
    for name, tids in journal.items():
        tick = next((t for t in tids if t in handing), None)
        if tick is not None:
            followers = frozenset(t for n, ts in journal.items() if n != name for t in ts)
            return Roles(loop, tick, followers)
    raise ValueError("no leader Raft thread found (none both fsyncs a journal and writes an eventfd)")


def phases(calls: list[Call], who: Roles) -> dict[str, list[float]]:
    """Each write's phase durations (ms), for the writes whose every step was found."""
    starts = [i for i, c in enumerate(calls)
              if c.tid == who.loop and c.name == "write" and "<pipe:" in c.args]

    def after(i: int, test) -> int | None:
        for j in range(i, min(i + LOOKAHEAD, len(calls))):
            if test(calls[j]):
                return j
        return None

    out: dict[str, list[float]] = {p: [] for p in PHASES}
    for i, following in zip(starts, starts[1:]):
        steps = [i]
        for test in (lambda c: c.tid == who.tick and c.name == "sendto",
                     lambda c: c.tid in who.followers and c.name == "fdatasync"
                     and "journal" in c.args,
                     lambda c: c.tid in who.followers and c.name == "sendto",
                     lambda c: c.tid == who.tick and c.name == "recvfrom",
                     lambda c: c.tid == who.tick and c.name == "write" and "eventfd" in c.args,
                     lambda c: c.tid == who.loop and c.name == "sendmsg"):
            j = after(steps[-1], test)
            if j is None:
                break
            steps.append(j)
        else:
            reply = _socket(calls[steps[-1]].args)    # the request comes in on the same socket
            j = after(steps[-1] + 1, lambda c: c.name == "recvmsg" and _socket(c.args) == reply)
            if j is not None and j < following:
                steps += [j, following]
                for name, a, b in zip(PHASES, steps, steps[1:]):
                    out[name].append(calls[b].ms - calls[a].ms)
    return out


def table(found: dict[str, list[float]]) -> str:
    rows = ["| phase | writes | median ms | p90 ms | share of the sum |", "|---|---:|---:|---:|---:|"]
    medians = {p: statistics.median(v) for p, v in found.items() if v}
    total = sum(medians.values())
    for p, v in found.items():
        if v:
            p90 = sorted(v)[int(len(v) * 0.9)]
            rows.append(f"| {p} | {len(v)} | {medians[p]:.3f} | {p90:.3f} | "
                        f"{medians[p] / total:.0%} |")
    rows.append(f"| sum of the medians | | {total:.3f} | | |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trace", help="a `perf trace -T` output (bench.cpu_per_op --perf-trace)")
    a = ap.parse_args(argv)
    with open(a.trace) as f:
        calls = parse(f)
    try:
        who = roles(calls)
    except ValueError as err:
        print(f"bench.write_phases: {err}", file=sys.stderr)
        return 1
    found = phases(calls, who)
    if not found[PHASES[0]]:
        print("bench.write_phases: no complete write found in the trace", file=sys.stderr)
        return 1
    print(table(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
