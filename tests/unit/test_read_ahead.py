"""_ReadAhead: a chunk range read ahead for a sink that takes bytes in order - bounded, its
pieces drained in order, the reader's error raised after them, and a reader waiting for room
let go (with _Abandoned, never taken for a replica's failure) when the download stops."""
from __future__ import annotations

import threading
import time

import pytest

from gfs.client import _Abandoned, _ReadAhead
from gfs.errors import GfsError, Unavailable


def test_pieces_come_out_in_order_and_the_reader_waits_beyond_the_budget():
    ahead = _ReadAhead(budget=3)
    held_at_most = []

    def reader():
        for i in range(10):
            ahead.write(memoryview(bytes([i])))
            held_at_most.append(ahead._held)
        ahead.end()

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.2)
    assert ahead.pos == 3 and t.is_alive()           # waiting for room
    got = [bytes(p) for p in ahead.drain()]
    t.join(5)
    assert got == [bytes([i]) for i in range(10)]
    assert max(held_at_most) <= 3 and ahead.pos == 10


def test_the_reader_s_error_comes_after_the_pieces_it_delivered():
    ahead = _ReadAhead(budget=100)
    ahead.write(memoryview(b"ab"))
    ahead.end(Unavailable("no replica could serve"))
    drained = ahead.drain()
    assert bytes(next(drained)) == b"ab"
    with pytest.raises(Unavailable):
        next(drained)


def test_abandoning_lets_a_waiting_reader_go_with_an_error_no_replica_loop_catches():
    assert not issubclass(_Abandoned, GfsError)
    ahead = _ReadAhead(budget=1)
    ahead.write(memoryview(b"x"))
    raised = []

    def reader():
        try:
            ahead.write(memoryview(b"y"))
        except _Abandoned as err:
            raised.append(err)

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.1)
    ahead.abandon()
    t.join(5)
    assert not t.is_alive() and raised
