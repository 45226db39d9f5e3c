"""The leader's registry telling a chunkserver that missed its heartbeats (silent: most likely
gone, not dead yet) from one that keeps its pace (master/chunkservers.py silent())."""
from __future__ import annotations

from master.chunkservers import SILENT_MIN_S, ChunkserverRegistry

FIG = {"capacity_bytes": 100, "free_bytes": 100}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def beat(r: ChunkserverRegistry, address: str) -> None:
    r.heartbeat(address, "", "i1", True, [], [], FIG, (), {}, ("", 0, True))


def test_a_server_that_misses_three_beats_is_silent_until_it_is_dead():
    clock = Clock()
    r = ChunkserverRegistry(dead_after=10.0, clock=clock)
    for _ in range(5):                        # both beat every second
        beat(r, "a:1")
        beat(r, "b:1")
        clock.now += 1.0
    assert r.silent() == {}
    for _ in range(2):                        # a goes quiet, b keeps beating
        beat(r, "b:1")
        clock.now += 1.0
    assert r.silent() == {}                   # 3 s since a's last: not more than 3 beats yet
    clock.now += 0.5
    beat(r, "b:1")
    assert r.silent() == {"a:1": 3.5}
    assert r.alive_addresses() == ["a:1", "b:1"] and r.dead_addresses() == []
    clock.now += 7.0                          # past dead_after: dead, no longer silent
    beat(r, "b:1")
    assert r.silent() == {} and r.dead_addresses() == ["a:1"]


def test_the_pace_is_each_servers_own_and_never_under_the_floor():
    clock = Clock()
    r = ChunkserverRegistry(dead_after=60.0, clock=clock)
    for _ in range(4):
        beat(r, "slow:1")                     # every 5 s (--heartbeat-interval 5)
        clock.now += 5.0
    assert r.silent() == {}                   # 5 s since its last: its own pace
    clock.now += 10.5
    assert set(r.silent()) == {"slow:1"}      # 15.5 s: three of its beats missed
    r2 = ChunkserverRegistry(dead_after=60.0, clock=clock)
    for _ in range(4):
        beat(r2, "fast:1")                    # pieces of a report, back to back
        clock.now += 0.01
    clock.now += SILENT_MIN_S - 0.1
    assert r2.silent() == {}                  # under the floor
    clock.now += 0.2
    assert set(r2.silent()) == {"fast:1"}


def test_after_one_beat_the_pace_is_the_default_interval():
    clock = Clock()
    r = ChunkserverRegistry(dead_after=60.0, clock=clock)
    beat(r, "new:1")                          # registered, then gone at once
    clock.now += 2.9
    assert r.silent() == {}
    clock.now += 0.2
    assert set(r.silent()) == {"new:1"} and r.alive_addresses() == ["new:1"]
