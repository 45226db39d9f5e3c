"""One JSON line per request."""
from __future__ import annotations

import json
import sys
import time
from typing import TextIO


class AccessLog:
    def __init__(self, stream: TextIO | None = None):
        self.stream = stream if stream is not None else sys.stdout

    def write(self, **fields) -> None:
        fields["ts"] = round(time.time(), 3)
        try:
            self.stream.write(json.dumps(fields, separators=(",", ":")) + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass                                 # a closed log must not fail requests
