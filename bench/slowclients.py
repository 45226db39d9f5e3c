"""Slow clients (slowloris) against an HTTP server, for bench/gateway_memory.py: open CLIENTS
connections and keep them all open at once; half send a request head one header line every
INTERVAL seconds and never finish it, half send nothing. A server with header and idle timeouts
drops every one (a 408 first, for those that started a request); this driver counts who was
dropped, when, and who was still open when it gave up (HOLD seconds after it opened). All are
open at once only if they open faster than the server's timeout drops them: the report gives
the peak number open and how long opening all took.

    python -m bench.slowclients --port 8080 --clients 10000 [--interval 1] [--hold 60]

Prints one JSON object. Runs in its own process: its open files are its own (it raises its
limit to the hard limit), and its CPU is not the benchmark's.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from bench.common import percentile
from bench.rss import raise_nofile

CONNECT_AT_ONCE = 200          # connections being opened concurrently


class Tally:
    def __init__(self):
        self.opened = 0
        self.open_now = 0
        self.peak_open = 0
        self.refused = 0                   # could not connect
        self.dropped_after: list[float] = []   # seconds from open to the server's close
        self.got_408 = 0
        self.still_open = 0
        self.all_open_at: float | None = None


async def one(i: int, port: int, interval: float, hold: float, gate: asyncio.Semaphore,
              tally: Tally, clients: int, t0: float) -> None:
    async with gate:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), 10)
        except (OSError, asyncio.TimeoutError):
            tally.refused += 1
            return
    opened = time.monotonic()
    hold_until = opened + hold                   # each connection's own patience
    tally.opened += 1
    tally.open_now += 1
    tally.peak_open = max(tally.peak_open, tally.open_now)
    if tally.opened == clients:
        tally.all_open_at = opened - t0
    trickle = i % 2 == 0
    try:
        if trickle:
            writer.write(b"GET /small HTTP/1.1\r\nHost: bench\r\n")
        got = b""
        n = 0
        while time.monotonic() < hold_until:
            try:
                chunk = await asyncio.wait_for(reader.read(4096), interval if trickle else
                                               max(0.1, hold_until - time.monotonic()))
            except asyncio.TimeoutError:
                if trickle:
                    writer.write(b"X-Slow-%d: %d\r\n" % (n, i))
                    n += 1
                continue
            if not chunk:                        # the server closed: dropped
                tally.dropped_after.append(time.monotonic() - opened)
                tally.got_408 += got.startswith(b"HTTP/1.1 408")
                return
            got += chunk[:64]
        tally.still_open += 1
    except (ConnectionError, OSError):
        tally.dropped_after.append(time.monotonic() - opened)
    finally:
        tally.open_now -= 1
        writer.close()


async def drive(port: int, clients: int, interval: float, hold: float) -> dict:
    tally = Tally()
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)
    t0 = time.monotonic()
    await asyncio.gather(*(one(i, port, interval, hold, gate, tally, clients, t0)
                           for i in range(clients)))
    d = tally.dropped_after
    return {"clients": clients, "opened": tally.opened, "refused": tally.refused,
            "peak_open": tally.peak_open, "all_open_after_s": tally.all_open_at,
            "dropped": len(d), "got_408": tally.got_408, "still_open": tally.still_open,
            "dropped_after_s": {"min": min(d, default=None), "p50": percentile(d, 50) if d else None,
                                "max": max(d, default=None)},
            "seconds": time.monotonic() - t0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.slowclients", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--clients", type=int, default=10000)
    ap.add_argument("--interval", type=float, default=1.0,
                    help="seconds between header lines (default 1)")
    ap.add_argument("--hold", type=float, default=60.0,
                    help="give up on a connection still open this long after it opened "
                         "(default 60 s)")
    a = ap.parse_args(argv)
    limit = raise_nofile()
    if a.clients + 100 > limit:
        print(f"slowclients: {a.clients} connections need more open files than the limit "
              f"({limit}); raise the hard limit (ulimit -Hn)", file=sys.stderr)
        return 2
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(drive(a.port, a.clients, a.interval, a.hold))))
    return 0


if __name__ == "__main__":
    from bench.common import stop_cleanly_on_sigterm
    stop_cleanly_on_sigterm()
    sys.exit(main())
