"""Where the routes come from. `FileSource` follows a JSON route file (the format
config_store writes: {"routes": [...]}); `MasterSource` (masters.py) follows the masters. A source
calls `apply(routes, revision)` on each change and `confirm()` whenever it knows its config is
current."""
from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Callable

from gateway import config_store
from gateway.routing.route import Route

log = logging.getLogger("gateway.sources")
Apply = Callable[[list[Route], int], None]


class FileSource:
    """Polls the file's mtime (every `interval_s`); a change that does not parse or validate is
    logged and ignored, the routes in force stay."""

    def __init__(self, path: str, apply: Apply, confirm: Callable[[], None],
                 interval_s: float = 0.25):
        self.path = path
        self.apply = apply
        self.confirm = confirm
        self.interval_s = interval_s
        self._seen: tuple[float, int] | None = None
        self.last_error = ""

    def load_now(self) -> None:
        """Read the file once; raises on a missing or invalid file (the first load must work)."""
        st = os.stat(self.path)
        routes, revision, _ = config_store.load(self.path)
        self._seen = (st.st_mtime, st.st_size)
        self.apply(routes, revision or int(st.st_mtime))
        self.confirm()

    async def follow(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                st = os.stat(self.path)
                if (st.st_mtime, st.st_size) != self._seen:
                    self._seen = (st.st_mtime, st.st_size)
                    routes, revision, _ = config_store.load(self.path)
                    self.apply(routes, revision or int(time.time()))
                    self.last_error = ""
                self.confirm()
            except (OSError, ValueError) as err:
                if str(err) != self.last_error:
                    log.error("route file %s: %s (keeping the routes in force)", self.path, err)
                self.last_error = str(err)
