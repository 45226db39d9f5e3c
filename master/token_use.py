"""When each token was last used: noted in memory on every call a master serves, and written
through the log by the leader in one command per interval (not one log entry per request).
A token's "last used" may therefore lag by up to the interval, and uses noted by a master that
is not the leader (stale reads) are not kept: it is a hint for `gfs token ls`, not an audit."""
from __future__ import annotations

import logging
import threading
from typing import Callable

from gfs.clock import now_ms

log = logging.getLogger(__name__)
MAX_PER_COMMAND = 10_000


class TokenUses:
    def __init__(self, propose: Callable[[dict], dict], is_leader: Callable[[], bool],
                 interval_s: float = 30.0):
        self._propose = propose
        self._is_leader = is_leader
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._seen: dict[bytes, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="token-use", daemon=True)

    def note(self, auth: bytes | None) -> None:
        if auth is not None:
            for hashed in (auth[:32], auth[32:]) if len(auth) == 64 else (auth,):
                self._seen[hashed] = now_ms()     # one dict store: no lock needed

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

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

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()
