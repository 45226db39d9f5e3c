"""gateway/http/deadlines.py: connections' deadlines in one shared timer — each told once at
or just after its deadline, an earlier deadline moves it, a closed one is forgotten."""
from __future__ import annotations

import asyncio
import time

from gateway.http.deadlines import TICK_S, DeadlineWheel


class Conn:
    def __init__(self, name: str, told: list):
        self.name, self._tick, self._told = name, None, told

    def _check(self) -> None:
        self._told.append((self.name, time.monotonic()))


def test_deadlines_fire_in_order_move_earlier_and_forget_the_removed():
    async def go():
        wheel = DeadlineWheel(asyncio.get_running_loop())
        told: list = []
        a, b, c, d = (Conn(n, told) for n in "abcd")
        t0 = time.monotonic()
        wheel.file(a, t0 + 1.2)
        wheel.file(b, t0 + 0.1)
        wheel.file(c, t0 + 0.5)
        wheel.file(d, t0 + 5.0)
        wheel.file(d, t0 + 0.8)                 # an earlier deadline: moved, not doubled
        wheel.file(c, t0 + 0.5)                  # the same again: nothing changes
        assert len(wheel) == 4
        wheel.remove(a)                          # closed: never told
        await asyncio.sleep(1.4)
        assert [n for n, _ in told] == ["b", "c", "d"]
        deadlines = {"b": 0.1, "c": 0.5, "d": 0.8}      # a tick (TICK_S) or more apart
        for name, at in told:
            assert deadlines[name] <= at - t0 <= deadlines[name] + TICK_S + 0.5, (name, at - t0)
        assert len(wheel) == 0 and all(x._tick is None for x in (a, b, c, d))
        wheel.file(a, time.monotonic() + 0.05)  # filed again after its tick had come
        await asyncio.sleep(0.4)
        assert [n for n, _ in told] == ["b", "c", "d", "a"]
        wheel.file(b, time.monotonic() + 10)
        wheel.close()                            # nothing left scheduled
        assert b._tick is None and len(wheel) == 0

    asyncio.run(go())
