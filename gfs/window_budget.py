"""At most N events per time window, counted, for limits that must not cost more than the
events they limit (a fixed window: a burst at a boundary may see up to 2N)."""
from __future__ import annotations

import time
from typing import Callable


class WindowBudget:
    """`take()` is True for the first `per_window` events of each `window_s`, False after
    (those are counted in `dropped`). Not thread-safe: one owner."""

    def __init__(self, per_window: int, window_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self.per_window, self.window_s = per_window, window_s
        self._clock = clock
        self._start, self._used, self.dropped = float("-inf"), 0, 0

    def take(self) -> bool:
        now = self._clock()
        if now - self._start >= self.window_s:
            self._start, self._used = now, 0
        if self._used >= self.per_window:
            self.dropped += 1
            return False
        self._used += 1
        return True
