"""The read index and leader lease bookkeeping (master/readindex.py), on a fake clock."""
from __future__ import annotations

import pytest

from gfs.errors import Unavailable
from master.readindex import PROBE_PATIENCE, NotLeading, ReadIndex
from master.sharedlock import SharedLock


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make(majority: int = 2, lease_s: float = 0.0):
    clock = Clock()
    return ReadIndex(majority, lease_s, clock=clock), clock


def test_a_read_waits_for_a_majority_answer_to_a_probe_sent_after_it():
    ri, _ = make(majority=2)                  # 3 members: the leader + 1 follower
    assert ri.tick(True, 5, commit=10, ready=True, applied=10) is None   # nothing waiting
    f = ri.submit(1.0)
    seq = ri.tick(True, 5, commit=10, ready=True, applied=10)
    assert seq == 1 and not f.done()
    ri.on_ack("b", 5, seq, applied=10)
    assert f.result(0) == 10


def test_an_answer_to_an_earlier_probe_confirms_nothing_newer():
    ri, clock = make(majority=2)
    first = ri.submit(1.0)
    s1 = ri.tick(True, 5, commit=10, ready=True, applied=10)
    second = ri.submit(1.0)
    clock.t += 2 * PROBE_PATIENCE                 # the first round's answers are late: a second
    s2 = ri.tick(True, 5, commit=12, ready=True, applied=12)
    assert s2 == s1 + 1
    ri.on_ack("b", 5, s1, applied=12)
    assert first.done() and not second.done()
    ri.on_ack("b", 5, s2, applied=12)
    assert second.result(0) == 12


def test_reads_waiting_together_share_one_round():
    ri, _ = make(majority=3)                  # 5 members: 2 followers must answer
    futures = [ri.submit(1.0) for _ in range(50)]
    seq = ri.tick(True, 7, commit=3, ready=True, applied=3)
    assert ri.probes == 1
    ri.on_ack("b", 7, seq, applied=3)
    ri.on_ack("b", 7, seq, applied=3)         # the same follower twice is still one answer
    assert not any(f.done() for f in futures)
    ri.on_ack("c", 7, seq, applied=3)
    assert all(f.result(0) == 3 for f in futures)


def test_reads_arriving_while_a_round_is_out_share_the_next_one():
    ri, clock = make(majority=2)
    first = ri.submit(1.0)
    s1 = ri.tick(True, 5, commit=10, ready=True, applied=10)
    later = [ri.submit(1.0) for _ in range(3)]
    assert ri.tick(True, 5, commit=11, ready=True, applied=11) is None    # s1 is still out
    ri.on_ack("b", 5, s1, applied=11)
    assert first.result(0) == 10 and not any(f.done() for f in later)  # s1 began before them
    s2 = ri.tick(True, 5, commit=12, ready=True, applied=12)
    assert s2 == s1 + 1 and ri.probes == 2
    ri.on_ack("b", 5, s2, applied=12)
    assert [f.result(0) for f in later] == [12, 12, 12]


def test_a_round_whose_answers_are_lost_is_not_waited_for_long():
    ri, clock = make(majority=2)
    ri.submit(1.0)
    s1 = ri.tick(True, 5, commit=10, ready=True, applied=10)
    waiting = ri.submit(1.0)
    assert ri.tick(True, 5, commit=10, ready=True, applied=10) is None
    clock.t += 2 * PROBE_PATIENCE
    s2 = ri.tick(True, 5, commit=10, ready=True, applied=10)
    assert s2 == s1 + 1
    ri.on_ack("b", 5, s2, applied=10)
    assert waiting.result(0) == 10


def test_only_the_first_waiting_read_wakes_the_tick_thread():
    wakes = []
    ri = ReadIndex(2, wake=lambda: wakes.append(1))
    ri.submit(1.0)
    ri.submit(1.0)
    assert len(wakes) == 1
    ri.tick(True, 5, commit=1, ready=True, applied=1)
    ri.submit(1.0)
    assert len(wakes) == 2


def test_answers_of_another_term_do_not_count():
    ri, _ = make(majority=2)
    f = ri.submit(1.0)
    seq = ri.tick(True, 5, commit=10, ready=True, applied=10)
    ri.on_ack("b", 4, seq, applied=10)
    ri.on_ack("b", 6, seq, applied=10)
    ri.on_ack("b", 5, seq + 1, applied=10)    # a seq never sent
    assert not f.done()


def test_a_confirmed_read_waits_until_its_index_is_applied():
    ri, _ = make(majority=2)
    f = ri.submit(1.0)
    seq = ri.tick(True, 5, commit=20, ready=True, applied=15)
    ri.on_ack("b", 5, seq, applied=15)
    assert not f.done()
    ri.on_applied(19)
    assert not f.done()
    ri.on_applied(20)
    assert f.result(0) == 20


def test_no_probe_before_the_leader_committed_an_entry_of_its_term():
    ri, _ = make(majority=2)
    f = ri.submit(1.0)
    assert ri.tick(True, 5, commit=10, ready=False, applied=10) is None
    seq = ri.tick(True, 5, commit=11, ready=True, applied=11)
    ri.on_ack("b", 5, seq, applied=11)
    assert f.result(0) == 11


def test_losing_leadership_or_a_new_term_fails_every_waiting_read():
    ri, _ = make(majority=2)
    ri.tick(True, 5, commit=1, ready=True, applied=1)
    waiting, probing = ri.submit(1.0), ri.submit(1.0)
    ri.tick(True, 5, commit=1, ready=True, applied=1)
    ri.tick(False, 5, commit=1, ready=False, applied=1)
    for f in (waiting, probing):
        with pytest.raises(NotLeading):
            f.result(0)
    late = ri.submit(1.0)
    seq = ri.tick(True, 6, commit=2, ready=True, applied=2)
    ri.tick(True, 7, commit=2, ready=True, applied=2)     # re-elected: a new term
    ri.on_ack("b", 6, seq, applied=2)
    with pytest.raises(NotLeading):
        late.result(0)


def test_an_unconfirmed_read_fails_at_its_deadline():
    ri, clock = make(majority=2)
    f = ri.submit(0.5)
    ri.tick(True, 5, commit=1, ready=True, applied=1)
    clock.t += 0.6
    ri.tick(True, 5, commit=1, ready=True, applied=1)
    with pytest.raises(Unavailable):
        f.result(0)


def test_a_single_master_confirms_at_once():
    ri, _ = make(majority=1)
    f = ri.submit(1.0)
    ri.tick(True, 1, commit=4, ready=True, applied=4)
    assert f.result(0) == 4


def test_the_lease_runs_from_when_the_answered_probe_was_sent():
    ri, clock = make(majority=2, lease_s=0.75)
    assert not ri.lease_valid(5)
    seq = ri.tick(True, 5, commit=1, ready=True, applied=1, keep_lease=True)
    sent = clock.t
    clock.t += 0.5                            # the answer is slow to arrive
    ri.on_ack("b", 5, seq, applied=1)
    assert ri.lease_valid(5) and not ri.lease_valid(6)
    clock.t = sent + 0.74
    assert ri.lease_valid(5)
    clock.t = sent + 0.76                     # not answer time + lease: send time + lease
    assert not ri.lease_valid(5)


def test_under_the_lease_waiting_reads_need_no_round():
    ri, _ = make(majority=2, lease_s=0.75)
    seq = ri.tick(True, 5, commit=1, ready=True, applied=1, keep_lease=True)
    ri.on_ack("b", 5, seq, applied=1)
    probes = ri.probes
    f = ri.submit(1.0)
    assert ri.tick(True, 5, commit=3, ready=True, applied=3) is None
    assert f.result(0) == 3 and ri.probes == probes and ri.lease_reads == 1


def test_a_paused_leader_wakes_up_without_a_lease():
    ri, clock = make(majority=2, lease_s=0.75)
    seq = ri.tick(True, 5, commit=1, ready=True, applied=1, keep_lease=True)
    clock.t += 5.0                            # SIGSTOP: the answer waits in the socket
    ri.on_ack("b", 5, seq, applied=1)
    assert not ri.lease_valid(5)
    f = ri.submit(1.0)
    assert ri.tick(True, 5, commit=1, ready=True, applied=1) is not None   # a round, not the lease
    assert not f.done()


def test_losing_leadership_ends_the_lease():
    ri, _ = make(majority=2, lease_s=0.75)
    seq = ri.tick(True, 5, commit=1, ready=True, applied=1, keep_lease=True)
    ri.on_ack("b", 5, seq, applied=1)
    ri.tick(False, 5, commit=1, ready=False, applied=1)
    assert not ri.lease_valid(5)


def test_shared_lock_readers_overlap_and_nest_while_a_writer_waits():
    import threading
    lock = SharedLock()
    inside = threading.Event()
    release = threading.Event()
    order = []

    def writer():
        inside.wait()
        with lock.exclusive():
            order.append("write")

    t = threading.Thread(target=writer)
    t.start()
    with lock.shared():
        inside.set()
        while not lock._writers_waiting:      # the writer is queued behind this reader
            pass
        with lock.shared():                   # nesting does not deadlock behind it
            order.append("nested read")
        release.set()
    t.join(5)
    assert order == ["nested read", "write"]


def test_a_round_asks_only_the_followers_that_answered_the_last_one_first():
    ri, clock = make(majority=3)                 # 5 members: the leader + 2 followers
    everyone = ["b", "c", "d", "e"]
    ri.submit(1.0)
    s1 = ri.tick(True, 5, commit=10, ready=True, applied=10)
    assert ri.probe_targets(s1, everyone) == everyone          # the first round: all
    for f in ("d", "b", "e"):
        ri.on_ack(f, 5, s1, applied=10)
    waiting = ri.submit(1.0)
    s2 = ri.tick(True, 5, commit=10, ready=True, applied=10)
    assert ri.probe_targets(s2, everyone) == ["d", "b"]       # the quickest majority
    ri.on_ack("d", 5, s2, applied=10)
    assert not waiting.done()
    ri.on_ack("b", 5, s2, applied=10)
    assert waiting.result(0) == 10
    # "b" stops answering: the round asked of d and b is not confirmed; the next one, sent
    # after PROBE_PATIENCE, goes to everyone again, and any majority confirms it.
    slow = ri.submit(1.0)
    s3 = ri.tick(True, 5, commit=10, ready=True, applied=10)
    assert ri.probe_targets(s3, everyone) == ["d", "b"]
    ri.on_ack("d", 5, s3, applied=10)
    assert ri.tick(True, 5, commit=10, ready=True, applied=10) is None   # s3 still out
    clock.t += 2 * PROBE_PATIENCE
    slow_too = ri.submit(1.0)
    s4 = ri.tick(True, 5, commit=10, ready=True, applied=10)
    assert ri.probe_targets(s4, everyone) == everyone
    ri.on_ack("e", 5, s4, applied=10)
    ri.on_ack("c", 5, s4, applied=10)
    assert slow.result(0) == 10 and slow_too.result(0) == 10
    # A follower gone from the group is never picked.
    ri.on_ack("d", 5, s4, applied=10)
    ri.submit(1.0)
    s5 = ri.tick(True, 5, commit=10, ready=True, applied=10)
    assert ri.probe_targets(s5, ["c", "d", "e"]) == ["e", "c"]
    assert ri.probe_targets(s5, ["c", "d"]) == ["c", "d"]


def test_reads_of_a_round_nobody_answers_are_asked_again_without_new_reads():
    """One client, one read at a time: the round went to the follower that answered first
    last time, which then died. No other read comes to start a round: after PROBE_PATIENCE
    the tick starts one anyway, for everyone, instead of leaving the read to its deadline."""
    ri, clock = make(majority=2)                 # 3 members: the leader + 1 follower
    ri.submit(1.0)
    s1 = ri.tick(True, 5, commit=10, ready=True, applied=10)
    ri.on_ack("b", 5, s1, applied=10)
    alone = ri.submit(1.0)
    s2 = ri.tick(True, 5, commit=10, ready=True, applied=10)
    assert ri.probe_targets(s2, ["b", "c"]) == ["b"]             # ... and b dies
    assert ri.tick(True, 5, commit=10, ready=True, applied=10) is None      # still out
    clock.t += 2 * PROBE_PATIENCE
    s3 = ri.tick(True, 5, commit=10, ready=True, applied=10)
    assert s3 == s2 + 1 and ri.probe_targets(s3, ["b", "c"]) == ["b", "c"]
    ri.on_ack("c", 5, s3, applied=10)
    assert alone.result(0) == 10
    clock.t += 2 * PROBE_PATIENCE                # nothing waits: no round
    assert ri.tick(True, 5, commit=10, ready=True, applied=10) is None


def test_a_new_term_or_membership_asks_everyone_first():
    ri, _ = make(majority=2)
    ri.submit(1.0)
    s1 = ri.tick(True, 5, commit=10, ready=True, applied=10)
    ri.on_ack("b", 5, s1, applied=10)
    ri.submit(1.0)
    s2 = ri.tick(True, 5, commit=10, ready=True, applied=10)
    assert ri.probe_targets(s2, ["b", "c"]) == ["b"]
    ri.reconfigure(frozenset({"b", "c", "d"}), 3)
    assert ri.probe_targets(s2 + 1, ["b", "c", "d"]) == ["b", "c", "d"]
    ri.submit(1.0)
    s = ri.tick(True, 6, commit=11, ready=True, applied=11)        # a new term
    assert ri.probe_targets(s, ["b", "c", "d"]) == ["b", "c", "d"]
