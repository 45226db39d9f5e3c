"""The deadlines of every client connection of a worker in one timer. A timer per connection
(asyncio's TimerHandle and libuv's timer under it) cost ~0.6 KB each: 6 MiB for 10,000 slow
clients. Here a connection is filed under the tick (TICK_S apart) at or after its deadline; at
each tick the connections filed under it are told (`_check`), and those whose deadline moved
later file themselves again. A connection sits in one tick at a time and leaves it when it
closes, so nothing holds a closed connection."""
from __future__ import annotations

import asyncio
import heapq
import math
import time
from typing import Protocol

TICK_S = 0.25                   # how late a deadline may be noticed, at most


class Timed(Protocol):
    _tick: int | None           # the tick it is filed under, None if none (kept by the wheel)

    def _check(self) -> None: ...


class DeadlineWheel:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self._slots: dict[int, set[Timed]] = {}
        self._ticks: list[int] = []              # a heap of the ticks in _slots
        self._handle: asyncio.TimerHandle | None = None
        self._handle_tick: int | None = None

    def __len__(self) -> int:
        return sum(len(s) for s in self._slots.values())

    def file(self, conn: Timed, deadline: float) -> None:
        """Tell `conn` (its `_check`) at or up to TICK_S after `deadline` (time.monotonic()),
        instead of when it was filed for (`file` again with an earlier deadline only)."""
        tick = math.ceil(deadline / TICK_S)
        if conn._tick == tick:
            return
        self.remove(conn)
        slot = self._slots.get(tick)
        if slot is None:
            slot = self._slots[tick] = set()
            heapq.heappush(self._ticks, tick)
        slot.add(conn)
        conn._tick = tick
        if self._handle_tick is None or tick < self._handle_tick:
            self._schedule(tick)

    def remove(self, conn: Timed) -> None:
        tick = conn._tick
        if tick is not None:
            conn._tick = None
            slot = self._slots.get(tick)
            if slot is not None:
                slot.discard(conn)               # an empty slot goes when its tick comes

    def _schedule(self, tick: int) -> None:
        if self._handle is not None:
            self._handle.cancel()
        # (+5 ms: the loop's clock is read at the start of its turn, a little behind)
        delay = max(0.0, tick * TICK_S - time.monotonic()) + 0.005
        self._handle = self.loop.call_at(self.loop.time() + delay, self._fire)
        self._handle_tick = tick

    def _fire(self) -> None:
        self._handle = self._handle_tick = None
        now = time.monotonic()
        ticks = self._ticks
        while ticks and ticks[0] * TICK_S <= now:
            for conn in self._slots.pop(heapq.heappop(ticks)):
                conn._tick = None
                conn._check()                    # may file itself again (a later deadline)
        while ticks and not self._slots.get(ticks[0]):   # emptied by closes: skip, forget
            self._slots.pop(heapq.heappop(ticks), None)
        if ticks:
            self._schedule(ticks[0])

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._handle_tick = None
        for slot in self._slots.values():
            for conn in slot:
                conn._tick = None
        self._slots.clear()
        self._ticks.clear()
