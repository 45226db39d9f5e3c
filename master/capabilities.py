"""The masters' side of chunk capabilities: sign read and write capabilities with the current
key of the replicated state, tell chunkservers which keys to accept, make the first key when a
leader finds none, and rotate keys (see gfs.auth.capability and master.capability_keys)."""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable

from gfs.auth.capability import READ, WRITE, CapabilityIssuer
from gfs.errors import FailedPrecondition, GfsError, Unavailable
from master import capability_keys
from gfs.clock import now as gfs_now

log = logging.getLogger(__name__)

ANNOUNCE_MARGIN_S = 10.0     # the previous key is announced this long past the last expiry
# A new key signs only this long after it was made, once every chunkserver has heard of it from
# a heartbeat reply (heartbeats come every second); until then the previous key signs.
ACTIVATE_AFTER_S = 5.0


class MasterCapabilities:
    """`keys()` reads the state's key list; `propose(command)` replicates a leader command and
    returns its ok-result (MasterNode.propose)."""

    def __init__(self, cluster_secret: bytes, keys: Callable[[], list[dict]],
                 propose: Callable[[dict], dict], ttl_s: float,
                 clock: Callable[[], float] = gfs_now):
        self._issuer = CapabilityIssuer(cluster_secret, ttl_s, clock)
        self._keys = keys
        self._propose = propose
        self._clock = clock
        self.ttl_s = ttl_s

    def _signing_key(self) -> dict:
        keys = self._keys()
        if not keys:
            raise Unavailable("no capability key yet (a new leader makes one at once); retry")
        if len(keys) > 1 and self._clock() < keys[-1]["since"] / 1000 + ACTIVATE_AFTER_S:
            return keys[-2]
        return keys[-1]

    def signer(self, op: str) -> Callable[[int, int], bytes]:
        """`sign(handle, version)` for one response: the key is looked up once, at first use
        (a response without chunks needs none)."""
        key: dict | None = None

        def sign(handle: int, version: int) -> bytes:
            nonlocal key
            if key is None:
                key = self._signing_key()
            return self._issuer.issue(key["id"], key["salt"], handle, version, op)
        return sign

    def read(self, handle: int, version: int) -> bytes:
        return self.signer(READ)(handle, version)

    def write(self, handle: int, version: int) -> bytes:
        return self.signer(WRITE)(handle, version)

    def announced(self) -> list[tuple[int, bytes]]:
        """(key id, salt) pairs chunkservers accept: the current key, and the previous one until
        every capability it signed has expired."""
        keys = self._keys()
        if not keys:
            return []
        current = keys[-1]
        out = [(current["id"], current["salt"])]
        previous_valid_until = (current["since"] / 1000 + ACTIVATE_AFTER_S + self.ttl_s
                                + ANNOUNCE_MARGIN_S)
        if len(keys) > 1 and self._clock() < previous_valid_until:
            out.append((keys[-2]["id"], keys[-2]["salt"]))
        return out

    def rotate(self) -> int:
        """Make a new current key (the old one stays accepted until its capabilities expire)."""
        result = self._propose(capability_keys.command(self._keys(), os.urandom(
            capability_keys.SALT_BYTES)))
        log.info("capability key %d is current", result["key_id"])
        return result["key_id"]

    def ensure_key_soon(self, is_leader: Callable[[], bool]) -> None:
        """On becoming leader: in the background, make the first key if there is none."""
        def run() -> None:
            for _ in range(100):
                if not is_leader() or self._keys():
                    return
                try:
                    self.rotate()
                    return
                except GfsError as err:
                    log.warning("cannot make the first capability key yet: %s", err)
                    time.sleep(0.2)
        threading.Thread(target=run, name="capability-key", daemon=True).start()


class NoCapabilities:
    """MasterCapabilities' stand-in in the insecure mode (gfs/auth/insecure.py): no key is
    made, every capability is empty, chunkservers are told of no key."""

    ttl_s = 0.0

    def signer(self, op: str) -> Callable[[int, int], bytes]:
        return lambda handle, version: b""

    def read(self, handle: int, version: int) -> bytes:
        return b""

    def write(self, handle: int, version: int) -> bytes:
        return b""

    def announced(self) -> list[tuple[int, bytes]]:
        return []

    def rotate(self) -> int:
        raise FailedPrecondition("this cluster runs with --insecure-no-auth: it signs no chunk "
                                 "capabilities, so it has no key to rotate")

    def ensure_key_soon(self, is_leader: Callable[[], bool]) -> None:
        pass
