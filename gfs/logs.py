"""JSON-lines logging for every daemon: one object per line on stderr."""
from __future__ import annotations

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
