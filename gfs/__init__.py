"""gfs: a GFS-style distributed file system — shared core library."""

__version__ = "0.1.0"
