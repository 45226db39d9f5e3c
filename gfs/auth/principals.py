"""Who a token is: the one resolution of a token hash into a `Principal`, shared by the state
machine (over LMDB, at a command's position in the log) and by services that keep a local copy
of users and tokens from the masters' Watch feed (gfs/auth/watcher.py)."""
from __future__ import annotations

import functools
import time
from typing import Callable

from gfs.auth.checker import Principal
from gfs.auth.scopes import parse_scopes
from gfs.errors import Unauthenticated

USER, ACCOUNT = "user", "account"
Lookup = Callable[[object], "dict | None"]


def when(ms: int) -> str:
    """A time for messages, always in UTC (the same text on every replica)."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ms / 1000))


@functools.lru_cache(maxsize=4096)
def _scopes(texts: tuple[str, ...]):
    parsed = parse_scopes(list(texts))
    return None if parsed is None else tuple(parsed)


def resolve(token_record: dict | None, user_of: Callable[[str], dict | None], now: int) -> Principal:
    """The principal of a stored token record (None: no such token) at `now` (ms), looking
    users and service accounts up with `user_of(name)`; Unauthenticated for a token that is not
    valid then (unknown, revoked, expired, its owner gone or disabled)."""
    record = token_record
    if record is None:
        raise Unauthenticated("unknown token (never issued by this cluster, or deleted)")
    if record["revoked"]:
        raise Unauthenticated(f"token {record['name']!r} was revoked {when(record['revoked'])}")
    if record["expires"] and now >= record["expires"]:
        raise Unauthenticated(f"token {record['name']!r} expired {when(record['expires'])}")
    acting = user_of(record["principal"])
    if acting is None:
        raise Unauthenticated(f"the owner of token {record['name']!r} no longer exists")
    owner = acting if acting["kind"] == USER else user_of(acting["owner"])
    for who in (acting, owner):
        if who is None or who["disabled"]:
            name = who["name"] if who else acting["owner"]
            raise Unauthenticated(f"user {name!r} is disabled")
    return Principal(user=owner["name"], admin=owner["admin"],
                     account=acting["name"] if acting["kind"] == ACCOUNT else "",
                     token=record["name"], scopes=_scopes(tuple(record["scopes"])))
