"""FaultFS: a FUSE file system that keeps what was written apart from what was made durable,
so a test can cut the power under a daemon (docs/faultfs.md)."""
from bench.chaos.faultfs.control import FaultFS, FaultFSError, fuse_available, is_mounted

__all__ = ["FaultFS", "FaultFSError", "fuse_available", "is_mounted"]
