"""The one clock daemons read wall time through: `now()` / `now_ms()`.

Wall time matters to the masters and chunkservers in command timestamps, garbage-collection
grace periods, trash retention, exactly-once session expiry, token and capability expiry and the
freshness window of signed daemon RPCs. A wall clock can jump (a mis-set clock corrected by hand,
a VM resumed, an NTP step), and a jump forward of ten minutes read straight from `time.time()`
would expire a token with five minutes left and collect a trash entry early; a jump backward
would make command time run backwards.

So `now()` is a *steady* wall clock (`SteadyClock`): it advances with the monotonic clock and
follows the system wall clock only by slewing, at most `MAX_SLEW` (1 %) faster or slower than
real time, like NTP's slew. It never goes backwards, and a step of the wall clock is absorbed
slowly: a deadline fires at most 1 % early or late while the two disagree. A disagreement over
`JUMP_WARN_S` is logged once as a warning (and once more when it has been absorbed). At daemon
start the steady clock takes the wall clock as it is (a clock wrong at start is NTP's job).

Test-only: with ``GFS_TEST_CLOCK_FILE=PATH`` (the daemons' ``--test-clock-file``) the system
wall clock is read as ``time.time()`` plus the offset in seconds written in PATH, re-read when
the file changes — how the chaos nemesis makes one daemon's wall clock jump. It is off unless
set, and nothing else in gfs sets it.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)

ENV_TEST_CLOCK_FILE = "GFS_TEST_CLOCK_FILE"
MAX_SLEW = 0.01          # the steady clock runs at most 1 % fast or slow to follow the wall clock
JUMP_WARN_S = 1.0        # a disagreement beyond this is a jump: logged


class TestClockOffset:
    """The offset (seconds) in a test clock file; 0 when the file is missing or unreadable.
    Re-read when its modification time or size changes, checked at most every `recheck_s`."""

    __test__ = False                # not a pytest test class

    def __init__(self, path: str, recheck_s: float = 0.05):
        self.path = path
        self.recheck_s = recheck_s
        self._offset = 0.0
        self._stamp: tuple | None = None
        self._checked = float("-inf")
        self._lock = threading.Lock()

    def __call__(self) -> float:
        mono = time.monotonic()
        with self._lock:
            if mono - self._checked >= self.recheck_s:
                self._checked = mono
                self._reload()
            return self._offset

    def _reload(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError:
            self._offset, self._stamp = 0.0, None
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return
        try:
            with open(self.path) as f:
                self._offset = float(f.read().strip() or 0)
            self._stamp = stamp
        except (OSError, ValueError):
            pass                    # half-written: keep the last offset, read again next time


def write_test_offset(path: str | os.PathLike, offset_s: float) -> None:
    """Set a test clock file's offset atomically (what the nemesis calls)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(f"{offset_s!r}\n")
    os.replace(tmp, path)


def system_wall() -> Callable[[], float]:
    """The system wall clock as this process reads it (with the test offset if one is set)."""
    path = os.environ.get(ENV_TEST_CLOCK_FILE)
    if not path:
        return time.time
    offset = TestClockOffset(path)
    return lambda: time.time() + offset()


class SteadyClock:
    """Wall time that never jumps: see the module docstring."""

    def __init__(self, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 max_slew: float = MAX_SLEW, jump_warn_s: float = JUMP_WARN_S):
        self._wall = wall
        self._monotonic = monotonic
        self.max_slew = max_slew
        self.jump_warn_s = jump_warn_s
        self._lock = threading.Lock()
        self._t: float | None = None      # the last time returned
        self._m = 0.0                     # the monotonic reading it was returned at
        self.jumped = False               # is the wall clock more than jump_warn_s away now?

    def now(self) -> float:
        with self._lock:
            m, w = self._monotonic(), self._wall()
            if self._t is None:
                self._t, self._m = w, m
                return w
            dt = max(0.0, m - self._m)
            predicted = self._t + dt
            error = w - predicted
            bound = self.max_slew * dt
            t = predicted + min(bound, max(-bound, error))
            self._note(error)
            self._t, self._m = t, m
            return t

    def _note(self, error: float) -> None:
        if abs(error) > self.jump_warn_s and not self.jumped:
            self.jumped = True
            log.warning("the wall clock jumped %s by %.1f s: gfs time follows it by slewing at "
                        "most %g %% instead", "forward" if error > 0 else "backward", abs(error),
                        self.max_slew * 100, extra={"fields": {"clock_error_s": error}})
        elif abs(error) <= self.jump_warn_s and self.jumped:
            self.jumped = False
            log.warning("gfs time is within %g s of the wall clock again", self.jump_warn_s)


_clock = SteadyClock(system_wall())


def now() -> float:
    """Wall time in seconds, as every gfs daemon reads it (steady: never jumps or goes back)."""
    return _clock.now()


def now_ms() -> int:
    """`now()` in whole milliseconds (command timestamps, expiries)."""
    return int(_clock.now() * 1000)


def use_test_clock_file(path: str) -> None:
    """Test only: read the wall clock with the offset in `path` from now on (a daemon's
    --test-clock-file; called before the daemon starts, so nothing has read the clock yet)."""
    global _clock
    os.environ[ENV_TEST_CLOCK_FILE] = path
    _clock = SteadyClock(system_wall())
