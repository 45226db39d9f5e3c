"""What the leader's copy-making control loops share: a thread of their own that plans every
few seconds, a bounded pool for the slow work (RPCs to chunkservers), and the channels to them."""
from __future__ import annotations

import abc
import threading
from concurrent.futures import ThreadPoolExecutor

from gfs.transfer import Channels
from proto import chunkserver_pb2 as cpb


class WorkerLoop(abc.ABC):
    """Subclasses implement `_run` (waiting on `self._stop` between passes)."""

    def __init__(self, name: str, concurrency: int):
        self.channels = Channels()
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=name)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @abc.abstractmethod
    def _run(self) -> None:
        """The loop body of the thread; returns when `self._stop` is set."""

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
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
