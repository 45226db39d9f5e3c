"""Checks on request fields that the gRPC services apply before acting on them.

Each check returns the value unchanged or raises InvalidArgument with one line naming the field
and what is wrong with it (the state machine checks what it stores itself; see master/state.py).
"""
from __future__ import annotations

import math
import re
from typing import Iterable

from gfs.errors import InvalidArgument

MAX_HOST_CHARS = 253
MAX_LABEL_CHARS = 200            # free-text fields that are only shown (reasons, rack names)
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
_SHOW = 60


def _show(value: str) -> str:
    return repr(value) if len(value) <= _SHOW else repr(value[:_SHOW]) + f"... ({len(value)} chars)"


def address(value: str, field: str) -> str:
    """`host:port` as daemons advertise themselves: a DNS name, IPv4 address or bracketed IPv6
    address, and a port from 1 to 65535."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or len(host) > MAX_HOST_CHARS or not _HOST.fullmatch(host):
        raise InvalidArgument(f"{field} must be HOST:PORT, not {_show(value)}")
    if not (port.isdigit() and port.isascii() and 1 <= int(port) <= 65535):
        raise InvalidArgument(f"{field} {_show(value)}: the port must be 1 to 65535")
    return value


def addresses(values: Iterable[str], field: str, limit: int = 64) -> list[str]:
    """A list of `address`es, at most `limit` of them."""
    out = list(values)
    if len(out) > limit:
        raise InvalidArgument(f"{field} has {len(out)} addresses, more than {limit}")
    return [address(v, field) for v in out]


def label(value: str, field: str, limit: int = MAX_LABEL_CHARS) -> str:
    """A short free-text field: at most `limit` characters, no control characters."""
    if len(value) > limit:
        raise InvalidArgument(f"{field} is longer than {limit} characters: {_show(value)}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidArgument(f"{field} {_show(value)} contains control characters")
    return value


def non_negative(value: float, field: str) -> float:
    """A finite number >= 0 (a load, a size reported as a double)."""
    if not math.isfinite(value) or value < 0:
        raise InvalidArgument(f"{field} must be a finite number >= 0, not {value}")
    return value


def positive(value: int, field: str) -> int:
    """An id that 0 does not name (chunk handles)."""
    if value <= 0:
        raise InvalidArgument(f"{field} must be > 0, not {value}")
    return value
