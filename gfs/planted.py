"""Planted bugs: deliberately broken behaviours that the chaos suite must catch (test only).

A judge that never fails has not been shown to judge. With

    GFS_TEST_PLANTED_BUG=NAME  and  GFS_TEST_ALLOW_PLANTED_BUGS=yes-break-this-cluster

in a daemon's environment, the daemon misbehaves in the one way NAME says (BUGS). Either
variable without the other, or an unknown NAME, makes the daemon refuse to start; nothing in gfs
sets them (only the chaos suite's planted-bug tests do), so a normal start never reaches them.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

ENV_BUG = "GFS_TEST_PLANTED_BUG"
ENV_ALLOW = "GFS_TEST_ALLOW_PLANTED_BUGS"
ALLOW_VALUE = "yes-break-this-cluster"

BUGS = {
    "ack_before_fsync": "chunkservers acknowledge a chunk write before its data is fsync'd",
    "skip_dir_fsync": "chunkservers publish a chunk without fsyncing its directory",
    "follower_read": "masters answer linearizable reads from their local state, no barrier "
                     "(followers and deposed leaders included)",
    "apply_twice": "the state machine applies every command twice (the client sees the second "
                   "result)",
}


class PlantedBugRefused(RuntimeError):
    """The planted-bug variables are set wrongly: the daemon must not start."""


def _active() -> str | None:
    name = os.environ.get(ENV_BUG, "")
    allowed = os.environ.get(ENV_ALLOW, "")
    if not name and not allowed:
        return None
    if not name or allowed != ALLOW_VALUE:
        raise PlantedBugRefused(
            f"{ENV_BUG} and {ENV_ALLOW}={ALLOW_VALUE} go together (test only); refusing to start")
    if name not in BUGS:
        raise PlantedBugRefused(f"{ENV_BUG}={name!r} is not a planted bug (one of "
                                f"{', '.join(sorted(BUGS))}); refusing to start")
    return name


ACTIVE: str | None = None
try:
    ACTIVE = _active()
except PlantedBugRefused:
    ACTIVE = None          # check_at_start() reports it when a daemon starts


def check_at_start() -> None:
    """Called by every daemon before it serves: refuse a wrong setting, shout about a bug."""
    name = _active()
    if name:
        log.warning("PLANTED BUG %s ACTIVE (test only): %s", name, BUGS[name])


def planted(name: str) -> bool:
    """Is the planted bug `name` switched on in this process?"""
    return ACTIVE == name
