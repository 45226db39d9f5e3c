"""The command batcher's limits (master/proposer.py), with a recording propose function."""
from __future__ import annotations

import pytest
from pysyncobj import FAIL_REASON

from gfs.errors import ResourceExhausted
from master.proposer import Proposer


class Log:
    def __init__(self):
        self.entries: list[tuple[list[dict], object]] = []

    def propose(self, commands, callback) -> None:
        self.entries.append((commands, callback))

    def commit_first(self) -> None:
        commands, callback = self.entries.pop(0)
        callback([{"ok": {}} for _ in commands], FAIL_REASON.SUCCESS)


def test_an_entry_holds_at_most_max_batch_bytes_of_inline_data():
    log = Log()
    p = Proposer(log.propose, max_inflight=1, max_batch_bytes=100_000)
    first = p.submit({"op": "barrier"})
    futures = [p.submit({"op": "put_inline", "data": b"x" * 40_000}) for _ in range(5)]
    log.commit_first()                       # the lone first command went alone
    assert first.result(0) == {"ok": {}}
    assert len(log.entries[0][0]) == 2       # 80,000 bytes; a third would pass 100,000
    log.commit_first()
    assert len(log.entries[0][0]) == 2
    log.commit_first()
    assert len(log.entries[0][0]) == 1
    log.commit_first()
    assert all(f.result(0) == {"ok": {}} for f in futures)


def test_one_command_over_the_byte_limit_still_goes_alone():
    log = Log()
    p = Proposer(log.propose, max_inflight=1, max_batch_bytes=10)
    p.submit({"op": "put_inline", "data": b"x" * 50})
    assert len(log.entries[0][0]) == 1


def test_a_full_queue_refuses_at_once():
    log = Log()
    p = Proposer(log.propose, max_inflight=1, max_pending=3)
    p.submit({"op": "barrier"})              # in the log
    for _ in range(3):
        p.submit({"op": "barrier"})          # waiting
    with pytest.raises(ResourceExhausted):
        p.submit({"op": "barrier"})
    log.commit_first()                       # the waiting three go into one entry
    p.submit({"op": "barrier"})
