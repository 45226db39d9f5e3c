"""When each token was last used: noted in memory on every call a master serves, and written
through the log by the leader in one command per interval (not one log entry per request).
A token's "last used" may therefore lag by up to the interval, and uses noted by a master that
is not the leader (stale reads) are not kept: it is a hint for `gfs token ls`, not an audit."""
from __future__ import annotations

import logging
import threading
from typing import Callable

from gfs.clock import now_ms
from master.loops import PeriodicThread

log = logging.getLogger(__name__)
MAX_PER_COMMAND = 10_000


class TokenUses(PeriodicThread):
    def __init__(self, propose: Callable[[dict], dict], is_leader: Callable[[], bool],
                 interval_s: float = 30.0):
        super().__init__("token-use", interval_s)
        self._propose = propose
        self._is_leader = is_leader
        self._lock = threading.Lock()
        self._seen: dict[bytes, int] = {}

    def note(self, auth: bytes | None) -> None:
        if auth is not None:
            for hashed in (auth[:32], auth[32:]) if len(auth) == 64 else (auth,):
                self._seen[hashed] = now_ms()     # one dict store: no lock needed

    def flush(self) -> int:
        """Write what was noted through the log (leader only); how many tokens."""
        with self._lock:
            seen, self._seen = self._seen, {}
        if not seen or not self._is_leader():
            return 0
        uses = [[h, ms] for h, ms in seen.items()][:MAX_PER_COMMAND]
        try:
            self._propose({"op": "note_token_use", "uses": uses})
        except Exception as exc:          # leadership lost: the next leader notes its own
            log.info("token use not recorded: %s", exc)
            return 0
        return len(uses)

    def tick(self) -> None:
        self.flush()
