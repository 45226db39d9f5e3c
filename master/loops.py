"""What the leader's copy-making control loops share: a thread of their own that plans every
few seconds (and at once when a piece of work finished), a bounded pool for the slow work (RPCs
to chunkservers), and the channels to them."""
from __future__ import annotations

import abc
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable

from gfs.errors import GfsError
from gfs.transfer import Channels
from proto import chunkserver_pb2 as cpb

if TYPE_CHECKING:
    from master.chunkservers import ChunkserverRegistry


log = logging.getLogger(__name__)

IDLE_PER_PASS = 9      # after a pass, idle at least this many times its duration (≤ 10 % CPU)


class PeriodicThread(abc.ABC):
    """A daemon thread that runs `tick()` every `interval_s` until stopped (garbage collection,
    the reaper, token-use notes). A pass that fails is logged — a GfsError (leadership lost mid
    pass, a busy group) as a warning, anything else with its traceback — and the next pass runs
    as usual."""

    def __init__(self, name: str, interval_s: float):
        self.name = name
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @abc.abstractmethod
    def tick(self) -> None:
        """One pass."""

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.tick()
            except GfsError as err:
                log.warning("%s pass paused: %s", self.name, err)
            except Exception:
                log.exception("%s pass failed", self.name)


class WorkerLoop(abc.ABC):
    """Subclasses implement `tick` (one pass: plan, then hand work to `self._pool`). It runs
    every `interval_s`, and sooner when `poke()` says a piece of work finished (so a free slot
    does not wait for the next period) — but never more often than keeps planning under ~10 % of
    a core, since a pass over a big namespace costs real CPU."""

    def __init__(self, name: str, registry: "ChunkserverRegistry",
                 chunk_table: Callable[[], list[dict]], is_leader: Callable[[], bool],
                 concurrency: int, interval_s: float, clock: Callable[[], float]):
        self.name = name
        self.registry = registry          # the replica map and placement
        self.chunk_table = chunk_table    # the metadata's chunks (master.state.chunk_table)
        self.is_leader = is_leader
        self.concurrency = max(1, concurrency)
        self.interval_s = interval_s
        self.clock = clock
        self.failures = 0
        self.planned_replicas = 0         # replicas the last pass planned over (work done)
        self.channels = Channels()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=name)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @abc.abstractmethod
    def tick(self) -> None:
        """One pass of the loop."""

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.tick()
            except Exception:
                log.exception("%s pass failed", self.name)
            cost = time.monotonic() - started
            self._wake.wait(self.interval_s)
            self._wake.clear()
            rest = IDLE_PER_PASS * cost - (time.monotonic() - started - cost)
            if rest > 0:
                self._stop.wait(rest)

    def planning_view(self, rows: list[dict]) -> dict:
        """The live servers' replicas of the chunks in `rows` (the metadata's chunk table) only:
        a pass costs what the metadata holds, never what the servers report beyond it (replicas
        no file references are the garbage collector's, master/orphans.py)."""
        view = self.registry.view({row["handle"] for row in rows})
        self.planned_replicas = sum(len(sv.chunks) for sv in view.values())
        return view

    def poke(self) -> None:
        """Run the next pass now (a copy or move finished: its slot is free)."""
        self._wake.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.channels.close()


def copy_chunk(channels: Channels, target: str, handle: int, version: int, length: int,
               checksum: int, sources: list[str], max_bytes_per_s: int = 0) -> None:
    """Have `target` pull a replica of (handle, version) from `sources` (`CopyChunk`: every
    block verified, the result checked against the metadata's length and checksum). Raises
    grpc.RpcError when it fails. The deadline allows the throttled rate (at least 5 MiB/s)."""
    timeout = 60.0 + length / max(max_bytes_per_s or 0, 5 << 20)
    channels.stub(target).CopyChunk(cpb.CopyRequest(
        handle=handle, version=version, sources=sources, length=length, checksum=checksum,
        max_bytes_per_s=max_bytes_per_s), timeout=timeout)
