"""What every chaos test asserts of a run, with the seed and the kept logs in each message."""
from __future__ import annotations

import os
import random

from bench.chaos.runner import report


def seed_from_env() -> int:
    """GFS_CHAOS_SEED (to replay a failed run), else a fresh random seed."""
    return int(os.environ.get("GFS_CHAOS_SEED") or random.randrange(1 << 31))


def show(capsys, summary: dict) -> None:
    with capsys.disabled():
        print("\n" + report(summary))


def assert_clean(summary: dict, seed: int) -> None:
    """Nothing acknowledged lost, the history linearizable, no unclean error."""
    kept = f" (cluster and daemon logs kept in {summary.get('kept')})"
    assert summary["lost"] == 0, \
        f"seed {seed}: acknowledged data lost: {summary['lost_detail']}{kept}"
    assert summary["linearizable"] is True, f"seed {seed}: {summary['violations']}{kept}"
    assert summary["unclean_errors"] == 0, f"seed {seed}: {summary['unclean_detail']}{kept}"
