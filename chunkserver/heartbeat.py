"""Heartbeats from a chunkserver to the master leader: a full chunk report first (and whenever
the leader asks), then only what changed, with capacity and load figures (overall and per tier)
and the complete list of replicas known to be corrupt every time. Each reported chunk carries its
length and tier; a chunk that moved between tiers is reported again in `added` with its new tier
(never in `removed`: the replica did not go away, and the master drops a removed (handle, version)
after applying the additions). The reply may ask to delete replicas (garbage,
stale, surplus or corrupt ones) and to verify replicas a reader reported bad, and it names the
capability keys to accept. Heartbeats are signed with the cluster secret (gfs.auth.daemon): the
master ignores any other.

A full report of many replicas (200,000 replicas take about 6 MB, above gRPC's 4 MiB message
limit) is sent as consecutive pieces of at most `report_batch` replicas (GFS_REPORT_BATCH,
default REPORT_BATCH), one heartbeat each; the master takes the report as a whole when the last
piece arrives (master/chunkservers.py). What changed while the pieces were sent goes in the
next heartbeat's delta, as after a one-message report."""
from __future__ import annotations

import logging
import os
import threading
from typing import Callable, Iterable

from chunkserver.store import ChunkStore
from gfs.auth.daemon import DaemonAuth
from gfs.client import Client
from gfs.config import positive_int_env
from gfs.errors import GfsError
from gfs.sysstats import DiskBusy, cpu_load, host_memory, rss_bytes
from proto import master_pb2 as pb

log = logging.getLogger(__name__)

REPORT_BATCH = 20_000           # replicas per piece of a full report: about 0.6 MB
ENV_REPORT_BATCH = "GFS_REPORT_BATCH"


def report_batch_from_env() -> int:
    """GFS_REPORT_BATCH if set (a positive whole number), else REPORT_BATCH."""
    return positive_int_env(ENV_REPORT_BATCH, REPORT_BATCH)


class Heartbeater:
    """`on_verify(handle, version)` gets the replicas the leader wants checked (wired to the
    scrubber's request; version 0 means whatever version is stored)."""

    def __init__(self, store: ChunkStore, address: str, rack: str, masters: list[str],
                 interval: float = 1.0, *, daemon_auth: DaemonAuth | None,
                 on_verify: Callable[[int, int], None] | None = None,
                 on_keys: Callable[[list[tuple[int, bytes]]], None] | None = None,
                 tls_ca: str | None = None, report_batch: int | None = None):
        self.store = store
        self.report_batch = report_batch or report_batch_from_env()
        self.on_verify = on_verify
        self.on_keys = on_keys
        self.address = address
        self.rack = rack
        self.interval = interval
        self.instance = os.urandom(8).hex()
        self.client = Client(masters, deadline=max(2.0, interval * 2), attempt_timeout=1.0,
                             daemon_auth=daemon_auth, tls_ca=tls_ca)
        # io_load: the busier of the tiers' disks (one when both tiers share a disk).
        self.disks = [DiskBusy(store.root)]
        cold_disk = DiskBusy(store.cold_dir)
        if cold_disk.device != self.disks[0].device:
            self.disks.append(cold_disk)
        # What the leader knows: handle -> (version, tier); None: nothing.
        self.reported: dict[int, tuple[int, str]] | None = None
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
        metas = {m.handle: m for m in self.store.chunks()}
        current = {h: (m.version, m.tier) for h, m in metas.items()}
        full = self.reported is None
        known = self.reported or {}
        added = list(current) if full else [h for h, vt in current.items() if known.get(h) != vt]
        removed = {} if full else {h: vt[0] for h, vt in known.items()
                                   if h not in current or current[h][0] != vt[0]}
        u = self.store.usage()
        mem_total, mem_available = host_memory()
        figures = dict(
            address=self.address, rack=self.rack, full_report=full, instance=self.instance,
            capacity_bytes=u["capacity_bytes"], used_bytes=u["used_bytes"],
            free_bytes=u["free_bytes"], chunk_count=u["chunk_count"],
            io_load=max(d.fraction() for d in self.disks), cpu_load=cpu_load(), rss_bytes=rss_bytes(),
            corrupt=[pb.ChunkRef(handle=h, version=v)
                     for h, v in sorted(self.store.corrupt().items())],
            tiers=[pb.TierUsage(**t) for t in u["tiers"]],
            mem_total_bytes=mem_total, mem_available_bytes=mem_available)

        def reports(handles: list[int]) -> list[pb.ChunkReport]:
            return [pb.ChunkReport(handle=h, version=metas[h].version, length=metas[h].length,
                                   tier=metas[h].tier, stored_bytes=metas[h].stored_bytes)
                    for h in handles]

        if not full:
            resp = self._send(pb.HeartbeatRequest(
                **figures, added=reports(added),
                removed=[pb.ChunkReport(handle=h, version=v) for h, v in removed.items()]))
            self.reported = None if resp.need_full_report else current
            return
        report_id = os.urandom(8).hex()
        pieces = range(0, max(1, len(added)), self.report_batch)
        for number, start in enumerate(pieces):
            last = number == len(pieces) - 1
            resp = self._send(pb.HeartbeatRequest(
                **figures, added=reports(added[start:start + self.report_batch]),
                report_id=report_id, report_part=number, report_last=last))
            if resp.need_full_report:
                return                      # a piece went astray: start over next beat
        self.reported = current
        log.info("full report of %d replicas sent in %d pieces", len(added), len(pieces))

    def _send(self, req: pb.HeartbeatRequest) -> pb.HeartbeatResponse:
        """Send one heartbeat and carry out the orders in the reply."""
        self.sequence += 1
        req.sequence = self.sequence
        resp = self.client.call("Heartbeat", req)
        self.leader = self.client.leader or ""
        self.client.learn_masters(resp.masters)     # members added since this server started
        if resp.capability_keys and self.on_keys is not None:
            self.on_keys([(k.key_id, k.salt) for k in resp.capability_keys])
        if resp.delete:
            self.delete([(r.handle, r.version) for r in resp.delete])
        if resp.verify:
            self.verify([(r.handle, r.version) for r in resp.verify])
        return resp

    def delete(self, refs: Iterable[tuple[int, int]]) -> None:
        """The leader wants these replicas gone (garbage past the grace period, stale, surplus or
        corrupt). Version 0: whatever version is stored; otherwise only that version, so a
        replica repaired or updated meanwhile is kept."""
        refs = list(refs)
        gone = [(h, v) for h, v in refs if self.store.delete(h, v or None)]
        log.info("deleted %d of %d replicas the leader asked to remove", len(gone), len(refs),
                 extra={"fields": {"replicas": [f"{h:016x}-{v}" for h, v in refs[:50]]}})
        if gone:
            self.poke()     # report the removals promptly

    def verify(self, refs: Iterable[tuple[int, int]]) -> None:
        """A reader reported these replicas bad: have the scrubber check them first thing."""
        refs = list(refs)
        log.info("leader asked to verify %d replicas", len(refs),
                 extra={"fields": {"replicas": [f"{h:016x}-{v}" for h, v in refs[:50]]}})
        if self.on_verify is not None:
            for h, v in refs:
                self.on_verify(h, v)
