"""A shared/exclusive lock: many readers at once, or one writer.

The masters' metadata store is read by the gRPC event loop, the leader's control loops and
/metrics scrapes at the same time (LMDB read transactions need no lock among themselves, nor
against the apply thread's write transaction). The one thing a read must not overlap is the
store being swapped for a snapshot from the leader (or closed at shutdown): that takes the lock
exclusively. A waiting writer keeps new readers out, so a swap is never starved by a stream of
reads (a thread already reading may nest another read: it never waits).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator


class SharedLock:
    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._mine = threading.local()      # this thread's nested shared holds

    @contextmanager
    def shared(self) -> Iterator[None]:
        depth = getattr(self._mine, "depth", 0)
        with self._cond:
            while depth == 0 and (self._writer or self._writers_waiting):
                self._cond.wait()
            self._readers += 1
        self._mine.depth = depth + 1
        try:
            yield
        finally:
            self._mine.depth = depth
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
