"""The explicit insecure mode, `--insecure-no-auth` (env GFS_INSECURE_NO_AUTH=1): a daemon
that neither authenticates callers nor signs or checks daemon requests and chunk capabilities.

It exists to measure what authentication costs (bench/auth_cost.py) and for throwaway local
experiments; never for data anybody cares about. In it:

- masters treat every caller as an administrator (the token a client sends is ignored), do not
  check the cluster-secret signature of heartbeats, sign no chunk capabilities and send their
  orders to chunkservers unsigned;
- chunkservers serve every read and write without a capability, obey unsigned orders and send
  unsigned heartbeats.

Everything else is unchanged, the Raft port included: its frames stay authenticated with the
cluster secret (nothing is unpickled from an unauthenticated peer), but with a key of its own
purpose (`raft_purpose`), so a secure master and an insecure one cannot form a Raft group at
all. That, with secure daemons' own checks, is why a daemon started without the flag never
accepts unauthenticated work because a peer runs insecure: a secure master refuses unsigned
heartbeats, a secure chunkserver refuses data requests without a capability and unsigned
orders, and no insecure master can ever lead (or feed log entries to) a secure one.

Each insecure daemon logs a loud warning at start and every minute, shows the mode in its
status (`gfs cluster status`) and exposes it on /metrics (`gfs_insecure_no_auth` = 1).
"""
from __future__ import annotations

import logging
import threading

from prometheus_client import Gauge

FLAG = "--insecure-no-auth"
ENV_VAR = "GFS_INSECURE_NO_AUTH"
MODE_SECURE, MODE_INSECURE = "secure", "insecure-no-auth"
WARNING = ("INSECURE: started with --insecure-no-auth: callers are NOT authenticated (everybody "
           "is an administrator), daemon requests and chunk capabilities are neither signed "
           "nor checked. For benchmarks and throwaway experiments only; never on a network "
           "anybody else can reach, never with data that matters.")
REPEAT_S = 60.0

GAUGE = Gauge("gfs_insecure_no_auth",
              "1 if this daemon runs with --insecure-no-auth (no authentication at all)")

log = logging.getLogger("gfs.insecure")


def mode_name(insecure: bool) -> str:
    return MODE_INSECURE if insecure else MODE_SECURE


def raft_purpose(insecure: bool) -> str:
    """The purpose the Raft frame key is derived for: secure and insecure masters differ, so
    neither accepts a frame of the other."""
    return "gfs-raft-frames-insecure-no-auth" if insecure else "gfs-raft-frames"


def announce(daemon: str, insecure: bool) -> None:
    """Set the /metrics gauge; when insecure, log the warning now and every REPEAT_S."""
    GAUGE.set(1 if insecure else 0)
    if not insecure:
        return
    fields = {"fields": {"insecure_no_auth": True, "auth": MODE_INSECURE, "daemon_kind": daemon}}
    log.warning(WARNING, extra=fields)

    def repeat() -> None:
        stop = threading.Event()
        while not stop.wait(REPEAT_S):
            log.warning(WARNING, extra=fields)
    threading.Thread(target=repeat, name="insecure-warning", daemon=True).start()

