"""Tell systemd (or any supervisor speaking its protocol) how a daemon is doing: the sd_notify
protocol, without libsystemd. A unit with `Type=notify` counts the daemon as started only when it
sends READY=1, so units ordered after it (and `systemctl start`) wait until it really serves.

The supervisor passes a unix datagram socket in $NOTIFY_SOCKET (a path, or @name for the
abstract namespace); each message is one datagram of newline-separated KEY=VALUE lines. Without
$NOTIFY_SOCKET every call does nothing, so daemons call these unconditionally.
"""
from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)

ENV_SOCKET = "NOTIFY_SOCKET"


def notify(message: str) -> bool:
    """Send one state message; True if it was delivered. Never raises: a supervisor that went
    away must not take the daemon with it."""
    address = os.environ.get(ENV_SOCKET, "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        log.warning("%s=%r is not a unix socket path; not notifying", ENV_SOCKET, address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as err:
        log.warning("cannot notify the supervisor on %s: %s", address.lstrip("\0"), err)
        return False
    return True


def ready(status: str = "") -> bool:
    """The daemon serves now (READY=1), with a human-readable status line."""
    return notify("READY=1\nMAINPID=%d" % os.getpid() + (f"\nSTATUS={status}" if status else ""))


def stopping(status: str = "") -> bool:
    """The daemon has begun shutting down (STOPPING=1)."""
    return notify("STOPPING=1" + (f"\nSTATUS={status}" if status else ""))
