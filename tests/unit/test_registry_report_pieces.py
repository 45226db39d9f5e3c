"""The leader's registry taking a chunkserver's full report in pieces (master/chunkservers.py)."""
from __future__ import annotations

from master.chunkservers import MAX_ORDERS, ChunkserverRegistry

FIG = {"capacity_bytes": 100, "free_bytes": 100}
ADDR = "10.0.0.1:7200"


def beat(r: ChunkserverRegistry, added, part=("", 0, True), full=True, instance="i1",
         removed=()) -> bool:
    return r.heartbeat(ADDR, "", instance, full, list(added), list(removed), FIG, (), {}, part)


def held(r: ChunkserverRegistry) -> dict[int, int]:
    return r.holdings().get(ADDR, {})


def test_pieces_make_one_report_when_the_last_arrives():
    r = ChunkserverRegistry()
    assert not beat(r, [(1, 1), (2, 1)], ("rep", 0, False))
    assert held(r) == {}                      # not a live server before the whole report
    assert not beat(r, [(3, 1)], ("rep", 1, False))
    assert held(r) == {}
    assert not beat(r, [(4, 2)], ("rep", 2, True))
    assert held(r) == {1: 1, 2: 1, 3: 1, 4: 2}


def test_a_replica_missing_from_the_complete_report_is_dropped_at_the_last_piece():
    r = ChunkserverRegistry()
    beat(r, [(1, 1), (2, 1), (3, 1)])
    assert not beat(r, [(1, 1)], ("again", 0, False))
    assert held(r) == {1: 1, 2: 1, 3: 1}      # the previous picture stands meanwhile
    assert not beat(r, [(3, 1)], ("again", 1, True))
    assert held(r) == {1: 1, 3: 1}            # 2 was in no piece: gone


def test_a_piece_out_of_order_asks_for_the_report_again():
    r = ChunkserverRegistry()
    beat(r, [(1, 1)], ("a", 0, False))
    assert beat(r, [(2, 1)], ("a", 2, True))          # piece 1 went astray
    assert held(r) == {}
    assert beat(r, [(2, 1)], ("a", 1, True))          # the pieces so far were dropped
    beat(r, [(1, 1)], ("b", 0, False))
    assert beat(r, [(2, 1)], ("other", 1, True))      # a piece of another report
    assert beat(r, [(2, 1)], ("b", 1, True), instance="i2")   # a restarted server starts over
    assert not beat(r, [(5, 1)], ("c", 0, False), instance="i2")
    assert not beat(r, [(6, 1)], ("c", 1, True), instance="i2")
    assert held(r) == {5: 1, 6: 1}


def test_deltas_before_the_report_is_complete_ask_for_it():
    r = ChunkserverRegistry()
    beat(r, [(1, 1)], ("a", 0, False))
    assert beat(r, [(2, 1)], full=False)


def test_one_message_report_of_an_older_chunkserver():
    r = ChunkserverRegistry()
    assert not beat(r, [(7, 3)])
    assert held(r) == {7: 3}


def test_orders_are_sent_in_bounded_replies():
    r = ChunkserverRegistry()
    beat(r, [])
    for handle in range(1, MAX_ORDERS + 11):
        r.queue_delete(ADDR, handle)
    first, _ = r.take_orders(ADDR)
    second, _ = r.take_orders(ADDR)
    assert len(first) == MAX_ORDERS and len(second) == 10
    assert {h for h, _ in first} | {h for h, _ in second} == set(range(1, MAX_ORDERS + 11))
    assert r.take_orders(ADDR) == ([], [])
