"""Human-readable sizes."""
from __future__ import annotations

import re

from gfs.errors import InvalidArgument

_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
_PARSE = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 1000**2,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1000**3, "gib": 1 << 30, "t": 1 << 40,
          "tb": 1000**4, "tib": 1 << 40}


def human_size(n: int | float) -> str:
    """1536 -> '1.5 KiB'."""
    n = float(n)
    for unit in _UNITS:
        if abs(n) < 1024 or unit == _UNITS[-1]:
            return f"{int(n)} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def parse_size(text: str) -> int:
    """'64MiB', '64M', '1.5 GB', '4096' -> bytes."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _PARSE:
        raise InvalidArgument(f"not a size: {text!r} (examples: 4096, 64MiB, 1.5GB)")
    return int(float(m.group(1)) * _PARSE[m.group(2).lower()])


_COUNTS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3}


def parse_count(text: str) -> int:
    """'1M', '250k', '5000' -> a whole number (SI multipliers)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]?)\s*", str(text))
    if not m or m.group(2).lower() not in _COUNTS:
        raise InvalidArgument(f"not a count: {text!r} (examples: 5000, 250k, 1M)")
    return int(float(m.group(1)) * _COUNTS[m.group(2).lower()])
