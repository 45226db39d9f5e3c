"""gfs: a GFS-style distributed file system — shared core library."""
import os

__version__ = "0.1.0"

# gRPC's TCP connections through its classic poller (iomgr) rather than its EventEngine threads,
# unless GRPC_EXPERIMENTS says otherwise. With EventEngine every call's bytes are handed between
# gRPC's own I/O threads and the thread (or asyncio loop) that waits for them; through the
# poller the waiting thread does the I/O itself. A streamed master call with one caller costs
# the server ~20 % less CPU and completes ~30 % more often per second this way (bench.call_stream,
# docs/benchmarks.md).
# Read by gRPC's core when it starts, so it has to be set before `grpc` is first imported: every
# package of this project imports `gfs` first for that reason.
GRPC_EXPERIMENTS = "-event_engine_client,-event_engine_listener"
os.environ.setdefault("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS)
