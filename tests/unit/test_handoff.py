"""master/handoff.py: outcomes handed from another thread to waiters on an event loop in one
call per batch, to worker threads' futures at once; late and orphaned outcomes are harmless."""
from __future__ import annotations

import asyncio
import threading

import pytest

from master import handoff
from master.handoff import LoopWaiter, running_future, settle


def in_thread(fn) -> None:
    t = threading.Thread(target=fn)
    t.start()
    t.join()


def test_a_batch_reaches_its_loop_in_one_call_and_futures_at_once():
    async def run():
        loop = asyncio.get_running_loop()
        calls = []
        real = loop.call_soon_threadsafe

        def counting(*args):
            calls.append(args)
            return real(*args)
        loop.call_soon_threadsafe = counting
        waiters = [LoopWaiter(loop) for _ in range(100)]
        future = running_future()
        outcomes = [(w, i, None) for i, w in enumerate(waiters)]
        outcomes.append((waiters[0], None, KeyError("no")))     # a second outcome: ignored
        outcomes.insert(50, (future, "direct", None))
        in_thread(lambda: settle(outcomes))
        assert future.result(0) == "direct"                   # no loop involved
        got = [await handoff.wait(w, 1.0) for w in waiters]
        assert got == list(range(100)) and len(calls) == 1
    asyncio.run(run())


def test_errors_reach_both_kinds_of_waiter():
    async def run():
        waiter, future = LoopWaiter(asyncio.get_running_loop()), running_future()
        in_thread(lambda: settle([(waiter, None, ValueError("bad")), (future, None,
                                                                      ValueError("worse"))]))
        with pytest.raises(ValueError, match="bad"):
            await handoff.wait(waiter, 1.0)
        with pytest.raises(ValueError, match="worse"):
            future.result(0)
    asyncio.run(run())


def test_a_waiter_that_timed_out_or_was_cancelled_takes_no_late_outcome():
    async def run():
        loop = asyncio.get_running_loop()
        late = LoopWaiter(loop)
        with pytest.raises(asyncio.TimeoutError):
            await handoff.wait(late, 0.01)
        gone = LoopWaiter(loop)
        task = asyncio.ensure_future(handoff.wait(gone, 5.0))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        in_thread(lambda: settle([(late, 1, None), (gone, 2, None)]))
        await asyncio.sleep(0.01)                              # the batch ran: no error raised
        assert isinstance(late.future.exception(), asyncio.TimeoutError)
        assert gone.future.cancelled()
    asyncio.run(run())


def test_outcomes_for_a_closed_loop_are_dropped():
    loop = asyncio.new_event_loop()
    waiter = LoopWaiter(loop)
    loop.close()
    settle([(waiter, 1, None)])                                # no exception


def test_outcomes_settled_on_the_loops_own_thread_are_set_at_once():
    """A read-probe answer over UDP settles reads on the loop that awaits them: no round trip
    through the loop's self-pipe (call_soon_threadsafe)."""
    async def run():
        loop = asyncio.get_running_loop()
        calls = []
        real = loop.call_soon_threadsafe
        loop.call_soon_threadsafe = lambda *args: calls.append(args) or real(*args)
        here, other = LoopWaiter(loop), LoopWaiter(loop)
        settle([(here, "now", None)])
        assert here.future.result() == "now" and not calls
        in_thread(lambda: settle([(other, "later", None)]))
        assert await handoff.wait(other, 1.0) == "later" and len(calls) == 1
    asyncio.run(run())
