"""Per-route token requirement, checked locally against the permission store the masters push
(gfs/auth/watcher.py): no call to the masters per request, and fail closed when the feed is
silent (the store refuses every token then)."""
from __future__ import annotations

from gfs.auth.checker import Principal
from gfs.auth.scopes import Scope, parse_scope
from gfs.errors import GfsError, InvalidArgument, Unauthenticated, Unavailable

ANY_TOKEN = "*"


def check_requirement(scope: str) -> None:
    """Raise ValueError unless `scope` is '*' (any valid token) or a scope of the grammar."""
    if scope and scope != ANY_TOKEN:
        try:
            parse_scope(scope)
        except InvalidArgument as err:
            raise ValueError(f"--require-token: {err.message}") from None


def grants(p: Principal, wanted: Scope | None) -> bool:
    """Does the token behind `p` grant every verb of `wanted` (None: any valid token)?"""
    if p.anonymous:
        return False
    if wanted is None:
        return True
    owner_ok = wanted.owner in ("*", p.user) or p.admin
    if p.scopes is None:                   # an unscoped token: every right of its owner
        return owner_ok if wanted.owner != "*" else p.admin
    return all(any(s.covers(wanted.service, wanted.owner, wanted.resource, verb,
                            wanted.path or None) for s in p.scopes)
               for verb in wanted.verbs)


class TokenChecker:
    """`(token, scope) -> user` for the proxy; raises its Refused (401/403/503)."""

    def __init__(self, store, refused: type):
        self.store = store
        self.refused = refused
        self._scopes: dict[str, Scope | None] = {}

    def __call__(self, token: str, scope: str) -> str:
        if scope not in self._scopes:
            self._scopes[scope] = None if scope == ANY_TOKEN else parse_scope(scope)
        try:
            principal = self.store.principal(token)
        except Unavailable as err:
            raise self.refused(503, f"cannot check tokens now: {err.message}") from None
        except Unauthenticated as err:
            raise self.refused(401, err.message) from None
        except GfsError as err:
            raise self.refused(401, err.message) from None
        if not grants(principal, self._scopes[scope]):
            raise self.refused(403, f"{principal.label} does not grant {scope}")
        return principal.user
