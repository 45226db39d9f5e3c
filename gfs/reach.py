"""Telling "no master can be reached at all" from "masters answer, but none leads yet".

A bad --masters (a typo, a host that does not resolve, nothing listening) should fail in a
couple of seconds with each address and why; an election in progress should be waited out. gRPC
says UNAVAILABLE for both: what tells them apart is whether the channel connected. Once any
master has answered, a client waits out later outages in full (a cluster restarting must not
fail the requests of a client that was working a moment ago).
"""
from __future__ import annotations

import re
import time
from typing import Callable

from gfs.errors import InvalidArgument, Unavailable

FAIL_FAST_S = 1.0           # every master unreachable this long, before any answered: give up

# gRPC's own words for "could not connect" (a master that answers never says these).
_CONNECT_FAILED = ("failed to connect to all addresses", "errors resolving",
                   "DNS resolution failed", "Connection refused", "connections to all backends failing")
_ADDRESS = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})")


def check_address(address: str, where: str = "master address") -> str:
    """`address` if it is HOST:PORT (an IPv6 host in brackets), else InvalidArgument."""
    m = _ADDRESS.fullmatch(address)
    if not m or not 0 < int(m.group(2)) < 65536:
        raise InvalidArgument(f"{where} {address!r} is not HOST:PORT (e.g. 10.0.0.1:7100, "
                              "master1.lan:7100, [::1]:7100)")
    return address


def unreachable_reason(details: str) -> str | None:
    """Why gRPC could not reach an address, in a few words; None if a server answered."""
    if not any(marker in details for marker in _CONNECT_FAILED):
        return None
    if "Connection refused" in details:
        return "connection refused (nothing listens there)"
    if "resolving" in details or "DNS" in details:
        return "unknown host (" + details.rsplit(": ", 1)[-1].rstrip("]") + ")"
    return details.rsplit(": ", 1)[-1]


class Reachability:
    """What each master's last attempt said, for one client."""

    def __init__(self, masters: list[str], clock: Callable[[], float] = time.monotonic):
        self._masters = masters
        self._clock = clock
        self._down: dict[str, str] = {}         # address -> why its last attempt failed to connect
        self._answered = False                  # has any master ever answered this client?
        self._all_down_since: float | None = None

    def answered(self, address: str) -> None:
        self._answered = True
        self._down.pop(address, None)
        self._all_down_since = None

    def failed(self, address: str, details: str) -> None:
        """An UNAVAILABLE attempt on `address` with gRPC's `details`."""
        why = unreachable_reason(details)
        if why is None:
            self.answered(address)              # it answered: not the leader, or busy
            return
        self._down[address] = why
        if self._all_down_since is None and len(self._down) == len(self._masters):
            self._all_down_since = self._clock()

    def give_up(self) -> Unavailable | None:
        """The error to fail with now, if no master could be reached for FAIL_FAST_S."""
        if self._answered or self._all_down_since is None or len(self._down) < len(self._masters):
            return None
        if self._clock() - self._all_down_since < FAIL_FAST_S:
            return None
        return Unavailable("no master can be reached: " + "; ".join(
            f"{a}: {self._down[a]}" for a in self._masters))

    def timeout_message(self, seconds: float, last: str) -> str:
        """Why no leader answered within the deadline, saying which case it was."""
        if self._down and len(self._down) < len(self._masters):
            case = (f"masters answer but none is the leader, and {len(self._down)} cannot be "
                    f"reached ({', '.join(self._down)}): without a majority no leader is elected")
        elif self._down:
            case = "no master can be reached now"
        else:
            case = "masters answer but none is the leader (an election is under way)"
        return (f"no master leader answered within {seconds:.0f}s: {case} "
                f"(tried {', '.join(self._masters)}; last: {last})")
