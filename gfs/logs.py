"""JSON-lines logging for every daemon: one object per line on stderr."""
from __future__ import annotations

import faulthandler
import json
import logging
import os
import sys
import time


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: ts, level, daemon, logger, msg (+ exc, extra fields)."""

    def __init__(self, daemon: str):
        super().__init__()
        self.daemon = daemon

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "daemon": self.daemon,
            "pid": os.getpid(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup(daemon: str, level: str | None = None) -> None:
    """Send all logging to stderr as JSON lines; level from the argument or GFS_LOG_LEVEL."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(daemon))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("GFS_LOG_LEVEL", "INFO")).upper())
    # pysyncobj logs connection churn at WARNING; keep it but not its DEBUG chatter.
    logging.getLogger("pysyncobj").setLevel(logging.WARNING)
    # A fatal signal (SIGBUS from an mmap'd LMDB page, SIGSEGV) otherwise leaves no trace: dump
    # every thread's Python stack to stderr (the daemon's log) before the process dies.
    try:
        faulthandler.enable(sys.stderr)
    except (AttributeError, ValueError, OSError):    # a stderr without a descriptor (captured)
        pass


class RepeatedFailure:
    """Logs a failure that may repeat many times a second (a tick loop on a full or failing
    disk) with its traceback at most once per `interval` seconds per kind of error, with how
    many were left out: a failing disk must not also fill the log's disk."""

    def __init__(self, logger: logging.Logger, what: str, interval: float = 10.0):
        self.logger, self.what, self.interval = logger, what, interval
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def exception(self, err: BaseException) -> None:
        """Call from an `except` block."""
        key = f"{type(err).__name__}: {err}"[:200]
        now = time.monotonic()
        if now - self._last.get(key, -self.interval) < self.interval:
            self._skipped[key] = self._skipped.get(key, 0) + 1
            return
        self._last[key] = now
        skipped = self._skipped.pop(key, 0)
        self.logger.exception("%s%s", self.what,
                              f" ({skipped} more like it in the last {self.interval:.0f} s)"
                              if skipped else "")
