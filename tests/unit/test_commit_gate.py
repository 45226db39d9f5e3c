"""CommitGate (master/commit_gate.py): when the tick thread commits applied entries, and the
readers that wait for it."""
from __future__ import annotations

import time

from master.commit_gate import CommitGate


def gate(delay=0.01, max_entries=4):
    wakes = []
    return CommitGate(lambda: wakes.append(1), delay, max_entries), wakes


def test_nothing_open_is_never_due_and_sleeps_a_whole_tick():
    g, _ = gate()
    assert not g.due(0, 0.0, readers_waiting=True)
    assert g.poll_timeout(0, 0.0, tick=0.05) == 0.05


def test_open_entries_are_due_after_the_delay_or_at_the_entry_bound_or_for_readers():
    g, _ = gate(delay=0.01, max_entries=4)
    now = time.monotonic()
    assert not g.due(1, now, False, now=now + 0.005)
    # (just past the delay: `now + 0.01 - now` can come out a hair under 0.01 in floating point)
    assert g.due(1, now, False, now=now + 0.0101)
    assert g.due(4, now, False, now=now)
    assert g.due(1, now, True, now=now)


def test_the_poll_sleeps_no_longer_than_the_oldest_open_entry_may_wait():
    g, _ = gate(delay=0.01)
    now = time.monotonic()
    assert 0.0 < g.poll_timeout(1, now, tick=0.05) <= 0.01
    assert g.poll_timeout(1, now - 1.0, tick=0.05) == 0.0
    assert gate(delay=1.0)[0].poll_timeout(1, now, tick=0.05) <= 0.05


def test_a_reader_waits_for_its_target_and_asks_for_a_commit_at_once():
    g, wakes = gate(delay=60.0)
    committed = 3
    assert g.when_committed(lambda: committed, 3).done()        # nothing to wait for
    assert wakes == []
    first = g.when_committed(lambda: committed, 5)
    later = g.when_committed(lambda: committed, 7)
    assert not first.done() and len(wakes) == 2
    now = time.monotonic()
    assert g.due(1, now, False, now=now)                        # asked: due before the delay
    g.committed(5)
    assert first.done() and not later.done()
    assert g.due(1, now, False, now=now)                        # still asked for by `later`
    g.committed(8)
    assert later.done()
    assert not g.due(1, now, False, now=now)
