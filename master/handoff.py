"""Results the Raft tick thread learns, handed to their waiters — on an asyncio event loop, in
batches.

A gRPC handler on the master's event loop waits for its command to be applied (master/
proposer.py) or for its read to be confirmed (master/readindex.py); the tick thread learns
those outcomes many at a time (a log entry carries up to 1,024 commands, one probe round
confirms every read that was waiting). `asyncio.wrap_future` of one concurrent Future per
request hands each outcome over on its own: a `call_soon_threadsafe` (a write to the loop's
self-pipe, and a wake-up of the loop) per request, plus the future chaining. `settle` hands a
batch over with one call per event loop instead.

A waiter is either a `concurrent.futures.Future` (callers on worker threads block on it) or a
`LoopWaiter` (callers on an event loop await it with `wait`); `settle` takes both.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import Future
from typing import Iterable, Union


class LoopWaiter:
    """An outcome awaited on `loop`; made on the loop's thread."""

    __slots__ = ("loop", "future")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.future: asyncio.Future = loop.create_future()


Waiter = Union[Future, LoopWaiter]
Outcome = tuple[Waiter, object, Union[BaseException, None]]    # (waiter, result, error)


def running_future() -> Future:
    """A concurrent Future for a caller on a worker thread. Running futures cannot be
    cancelled: a caller that stops waiting (deadline) must not make the tick thread's
    set_result fail."""
    future: Future = Future()
    future.set_running_or_notify_cancel()
    return future


def settle(outcomes: Iterable[Outcome]) -> None:
    """Resolve every waiter: concurrent Futures at once, loop waiters with one
    `call_soon_threadsafe` per event loop for the whole batch. Safe from any thread."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for outcome in outcomes:
        waiter, result, error = outcome
        if isinstance(waiter, LoopWaiter):
            by_loop.setdefault(waiter.loop, []).append(outcome)
        elif error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(result)
    running = _running_loop()
    for loop, batch in by_loop.items():
        if loop is running:        # on that loop's own thread (a read-probe answer over UDP)
            _resolve_on_loop(batch)
            continue
        try:
            loop.call_soon_threadsafe(_resolve_on_loop, batch)
        except RuntimeError:       # the loop is closed: nobody awaits these any more
            pass


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:           # a thread without one (the tick thread)
        return None


def _resolve_on_loop(batch: list[Outcome]) -> None:
    for waiter, result, error in batch:
        future = waiter.future
        if future.done():          # its caller stopped waiting (deadline, cancelled RPC)
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _time_out(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(asyncio.TimeoutError())


async def wait(waiter: LoopWaiter, timeout: float) -> object:
    """The waiter's result; asyncio.TimeoutError after `timeout` seconds (cheaper than
    `asyncio.wait_for`: one timer, no second future)."""
    timer = waiter.loop.call_later(timeout, _time_out, waiter.future)
    try:
        return await waiter.future
    finally:
        timer.cancel()
