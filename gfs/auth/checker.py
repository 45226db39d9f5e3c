"""The one permission checker: pure decisions shared by the state machine (for what is
replicated), the masters' read path and, later, the gateway (from the masters' Watch feed).

A caller is a `Principal`: a user (or a service account acting for its owner) seen through one
token. Its effective rights are the token's scopes intersected with the owner's own rights at the
moment of use: an administrator owns every right, a user the rights over their own resources
(`storage.<user>.files`, `compute.<user>.*`), anonymous none. On top of rights, a directory's
visibility (inherited by what is below it) lets others see or read:

    private  (default)  to everyone without rights it does not exist: NOT_FOUND, no names leak
    visible             any signed-in user may list and stat; contents stay unreadable
    public              anyone, anonymous included, may list, stat and read; only the owner writes
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from gfs.auth.scopes import Scope
from gfs.errors import GfsError, NotFound, PermissionDenied

PRIVATE, VISIBLE, PUBLIC = "private", "visible", "public"
VISIBILITIES = (PRIVATE, VISIBLE, PUBLIC)
INHERIT = ""                   # a directory without its own visibility takes its parent's
STORAGE, FILES = "storage", "files"
READ, LIST, WRITE, DELETE, SHARE = "read", "list", "write", "delete", "share"


@dataclass(frozen=True)
class Principal:
    """Who is calling. `user` owns the rights ("" = anonymous); `account` names the service
    account acting for that user; `scopes` None means every right of the owner."""
    user: str = ""
    admin: bool = False
    account: str = ""
    token: str = ""
    scopes: tuple[Scope, ...] | None = None

    @property
    def anonymous(self) -> bool:
        return not self.user

    @property
    def label(self) -> str:
        """How errors and the audit log name the caller, e.g. "token 'ci' (alice)"."""
        if self.anonymous:
            return "anonymous"
        who = f"{self.account} of {self.user}" if self.account else self.user
        return f"token {self.token!r} ({who})" if self.token else who


ANONYMOUS = Principal()


class Decision(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"              # the caller may see the object but not do this: PERMISSION_DENIED
    HIDE = "hide"              # the caller may not even know it exists: NOT_FOUND


def owner_rights(p: Principal, owner: str) -> bool:
    """Does the principal's owner hold rights over `owner`'s resources?"""
    return p.admin or (not p.anonymous and p.user == owner)


def allows(p: Principal, service: str, owner: str, resource: str, verb: str,
           path: str | None = None) -> bool:
    """The principal's effective right: its owner's rights intersected with its token's scopes."""
    if not owner_rights(p, owner):
        return False
    return p.scopes is None or any(s.covers(service, owner, resource, verb, path) for s in p.scopes)


def can_see(p: Principal, owner: str, visibility: str, path: str) -> bool:
    """May the principal list or stat a file or directory?"""
    if visibility == PUBLIC or (visibility == VISIBLE and not p.anonymous):
        return True
    return allows(p, STORAGE, owner, FILES, LIST, path)


def decide(p: Principal, verb: str, owner: str, visibility: str, path: str) -> Decision:
    """May `p` do `verb` (read, list, write, delete, share) on `path`, owned by `owner`, whose
    effective visibility is `visibility`?"""
    if verb == LIST:
        return Decision.ALLOW if can_see(p, owner, visibility, path) else Decision.HIDE
    if verb == READ and visibility == PUBLIC:
        return Decision.ALLOW
    if allows(p, STORAGE, owner, FILES, verb, path):
        return Decision.ALLOW
    return Decision.DENY if can_see(p, owner, visibility, path) else Decision.HIDE


def refusal(p: Principal, decision: Decision, verb: str, owner: str, path: str) -> GfsError:
    """The error for a decision that is not ALLOW, naming who lacked which permission where."""
    if decision is Decision.HIDE:
        return NotFound(f"{path}: no such file or directory")
    return PermissionDenied(f"{p.label} lacks {STORAGE}.{owner}.{FILES}:{verb} "
                            f"on {path}")

