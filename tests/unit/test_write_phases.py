"""bench/write_phases.py over a hand-made `perf trace -T` excerpt: two writes of one client."""
from __future__ import annotations

import pytest

from bench import write_phases

LOOP, TICK, F1, F2, GRPC = 100, 101, 200, 300, 102


def line(ms: float, tid: int, call: str, args: str) -> str:
    return f"{ms:.3f} ( 0.010 ms): python/{tid} {call}({args}) = 1\n"


def one_write(t: float) -> list[str]:
    return [
        line(t + 0.00, LOOP, "write", "fd: 8<pipe:[77]>, buf: 0x1, count: 1"),
        line(t + 0.10, TICK, "sendto", "fd: 11<socket:[5]>, buff: 0x1, len: 406"),
        line(t + 0.12, TICK, "sendto", "fd: 12<socket:[6]>, buff: 0x1, len: 406"),
        line(t + 0.20, TICK, "fdatasync", "fd: 6</d/master-1/raft/journal.log>"),
        line(t + 0.30, F1, "fdatasync", "fd: 6</d/master-2/raft/journal.log>"),
        line(t + 0.35, F2, "fdatasync", "fd: 6</d/master-3/raft/journal.log>"),
        line(t + 0.60, F1, "sendto", "fd: 11<socket:[7]>, buff: 0x1, len: 156"),
        line(t + 0.70, TICK, "recvfrom", "fd: 11<socket:[5]>, ubuf: 0x1, size: 1048576"),
        line(t + 1.00, TICK, "write", "fd: 18<anon_inode:[eventfd]>, buf: 0x1, count: 8"),
        line(t + 1.30, LOOP, "sendmsg", "fd: 31<socket:[9]>, msg: 0x1, flags: NOSIGNAL"),
        line(t + 1.40, GRPC, "recvmsg", "fd: 40<socket:[10]>, msg: 0x1"),    # another socket
        line(t + 1.80, GRPC, "recvmsg", "fd: 31<socket:[9]>, msg: 0x1"),
    ]


def test_the_phases_of_each_write_add_up_to_the_time_between_commands():
    calls = write_phases.parse(one_write(10.0) + one_write(12.0) + one_write(14.0))
    who = write_phases.roles(calls)
    assert who == write_phases.Roles(LOOP, TICK, frozenset({F1, F2}))
    found = write_phases.phases(calls, who)
    expected = [0.10, 0.20, 0.30, 0.10, 0.30, 0.30, 0.50, 0.20]
    for name, ms in zip(write_phases.PHASES, expected):
        assert found[name] == pytest.approx([ms, ms]), name        # the last write has no next
    assert sum(expected) == pytest.approx(2.0)
    assert "| sum of the medians | | 2.000 |" in write_phases.table(found)


def test_a_trace_without_writes_is_refused_with_a_message(tmp_path, capsys):
    trace = tmp_path / "t.txt"
    trace.write_text(line(1.0, LOOP, "epoll_wait", "epfd: 3"))
    assert write_phases.main([str(trace)]) == 1
    assert "no write to a pipe" in capsys.readouterr().err
