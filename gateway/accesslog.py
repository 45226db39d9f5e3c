"""One JSON line per request, written in batches: at most every FLUSH_S, or at once past
BUFFER_BYTES, and when the worker stops. A write of its own per request was a system call per
request (the log file is line-buffered, stdout is flushed): what nginx's `buffer=` avoids too.
A worker killed with -9 loses at most the last FLUSH_S of lines."""
from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import TextIO

FLUSH_S = 0.5
BUFFER_BYTES = 64 * 1024
# One encoder for every line (json.dumps with separators makes one per call: ~20 % of a line).
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


class AccessLog:
    def __init__(self, stream: TextIO | None = None, flush_s: float = FLUSH_S,
                 buffer_bytes: int = BUFFER_BYTES):
        self.stream = stream if stream is not None else sys.stdout
        self.flush_s = flush_s
        self.buffer_bytes = buffer_bytes
        self._lines: list[str] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None

    def write(self, **fields) -> None:
        """Queue one line; called on the worker's event loop (outside one: written at once)."""
        fields["ts"] = round(time.time(), 3)
        line = _ENCODE(fields) + "\n"
        self._lines.append(line)
        self._size += len(line)
        if self._size >= self.buffer_bytes:
            self.flush()
        elif self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(self.flush_s, self.flush)
            except RuntimeError:                 # no loop running here
                self.flush()

    def flush(self) -> None:
        """Write what is queued now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        lines, self._lines, self._size = self._lines, [], 0
        if not lines:
            return
        try:
            self.stream.write("".join(lines))
            self.stream.flush()
        except (OSError, ValueError):
            pass                                 # a closed log must not fail requests
