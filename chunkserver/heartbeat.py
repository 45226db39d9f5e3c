"""Heartbeats from a chunkserver to the master leader: a full chunk report first (and whenever
the leader asks), then only what changed, with capacity and load figures every time."""
from __future__ import annotations

import logging
import os
import threading

from chunkserver.store import ChunkStore
from gfs.client import Client
from gfs.errors import GfsError
from gfs.sysstats import DiskBusy, cpu_load, rss_bytes
from proto import master_pb2 as pb

log = logging.getLogger(__name__)


class Heartbeater:
    def __init__(self, store: ChunkStore, address: str, rack: str, masters: list[str],
                 interval: float = 1.0):
        self.store = store
        self.address = address
        self.rack = rack
        self.interval = interval
        self.instance = os.urandom(8).hex()
        self.client = Client(masters, deadline=max(2.0, interval * 2), attempt_timeout=1.0)
        self.disk = DiskBusy(store.root)
        self.reported: dict[int, int] | None = None    # what the leader knows; None: nothing
        self.sequence = 0
        self.leader = ""
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        self.client.close()

    def poke(self) -> None:
        """Send the next heartbeat now (e.g. right after a chunk was stored)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.beat()
            except GfsError as err:
                log.warning("heartbeat failed: %s", err)    # deltas are resent next time
            self._wake.wait(self.interval if self.reported is not None else min(0.2, self.interval))
            self._wake.clear()

    def beat(self) -> None:
        current = {m.handle: m.version for m in self.store.chunks()}
        full = self.reported is None
        known = self.reported or {}
        added = current if full else {h: v for h, v in current.items() if known.get(h) != v}
        removed = {} if full else {h: v for h, v in known.items() if current.get(h) != v}
        u = self.store.usage()
        self.sequence += 1
        req = pb.HeartbeatRequest(
            address=self.address, rack=self.rack, full_report=full, instance=self.instance,
            sequence=self.sequence,
            added=[pb.ChunkReport(handle=h, version=v) for h, v in added.items()],
            removed=[pb.ChunkReport(handle=h, version=v) for h, v in removed.items()],
            capacity_bytes=u["capacity_bytes"], used_bytes=u["used_bytes"],
            free_bytes=u["free_bytes"], chunk_count=u["chunk_count"],
            io_load=self.disk.fraction(), cpu_load=cpu_load(), rss_bytes=rss_bytes())
        resp = self.client.call("Heartbeat", req)
        self.leader = self.client.leader or ""
        self.reported = None if resp.need_full_report else current
        if resp.delete_handles:
            self.delete(resp.delete_handles)

    def delete(self, handles) -> None:
        """The leader's garbage collector found these chunks unreferenced past the grace period."""
        gone = sum(1 for h in handles if self.store.delete(h))
        log.info("deleted %d unreferenced chunks", gone, extra={"fields": {"handles": list(handles)[:50]}})
        self.poke()     # report the removals promptly
