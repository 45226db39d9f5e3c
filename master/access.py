"""Who may touch which path: the state machine's side of gfs/auth/checker.py.

A path is resolved once into an `Access` — its inode, record and *effective* visibility (the
visibility of the deepest file or directory on the way that has one of its own; private when
none has) — and checked with the one pure checker. Everybody may list the root (each entry is
then shown only to those who may see it); nothing else is special.
"""
from __future__ import annotations

import contextvars
import dataclasses
from typing import NamedTuple

from gfs import paths
from gfs.auth.checker import (LIST, PRIVATE, WRITE, Decision, Principal, can_see, decide,
                              refusal)
from gfs.errors import FailedPrecondition, NotFound, PermissionDenied
from master.store import DIR, ROOT_INODE, Tx

ROOT_OWNER = "root"
# Paths where the command being applied needed an administrator's rights (set per command by
# the state machine, which audits them; a ContextVar because reads authorize on other threads).
admin_overrides: contextvars.ContextVar[list | None] = contextvars.ContextVar(
    "admin_overrides", default=None)


class Access(NamedTuple):
    ino: int
    record: dict
    visibility: str            # effective: inherited from above unless set here

    @property
    def owner(self) -> str:
        return self.record["owner"]


def access(tx: Tx, path: str) -> Access:
    """Resolve `path` (NotFound if missing, FailedPrecondition if it crosses a file)."""
    parts = paths.components(path)
    ino, record = ROOT_INODE, tx.inode(ROOT_INODE)
    visibility = record.get("visibility") or PRIVATE
    for i, name in enumerate(parts):
        if record["type"] != DIR:
            raise FailedPrecondition(f"{'/' + '/'.join(parts[:i])} is not a directory")
        child = tx.lookup(ino, name)
        if child is None:
            raise NotFound(f"{'/' + '/'.join(parts[:i + 1])}: no such file or directory")
        ino, record = child, tx.inode(child)
        visibility = record.get("visibility") or visibility
    return Access(ino, record, visibility)


def access_dir(tx: Tx, path: str) -> Access:
    """`access` of a path that must be a directory (FailedPrecondition if it is a file)."""
    target = access(tx, path)
    if target.record["type"] != DIR:
        raise FailedPrecondition(f"{path} is not a directory")
    return target


def child_access(parent: Access, ino: int, record: dict) -> Access:
    """The Access of an entry of directory `parent`."""
    return Access(ino, record, record.get("visibility") or parent.visibility)


def authorize(caller: Principal, verb: str, path: str, target: Access) -> None:
    """Raise the refusal (PERMISSION_DENIED, or NOT_FOUND where even its existence must not
    show) unless `caller` may do `verb` on `path`."""
    if path == paths.ROOT and verb == LIST:
        return
    decision = decide(caller, verb, target.owner, target.visibility, path)
    if decision is Decision.HIDE and path == paths.ROOT:
        decision = Decision.DENY          # everybody sees the root
    if decision is not Decision.ALLOW:
        raise refusal(caller, decision, verb, target.owner, path)
    overrides = admin_overrides.get()
    if caller.admin and overrides is not None and decide(
            dataclasses.replace(caller, admin=False), verb, target.owner, target.visibility,
            path) is not Decision.ALLOW:
        overrides.append(path)


def may_see(caller: Principal, path: str, target: Access) -> bool:
    return can_see(caller, target.owner, target.visibility, path)


def writable_dir(tx: Tx, caller: Principal, path: str) -> Access:
    """The directory `path`, in which `caller` may create entries."""
    target = access(tx, path)
    authorize(caller, WRITE, path, target)
    if target.record["type"] != DIR:
        raise FailedPrecondition(f"{path} is not a directory")
    return target


def new_owner(caller: Principal, parent: dict, asked: str, system_user: str) -> str:
    """Who owns a new file or directory: the one asked for (administrators only), else the
    owner of the directory it is made in — the owner's namespace stays theirs whoever writes
    in it — except in directories of nobody's (the root), where it is the caller."""
    if asked:
        if not caller.admin:
            raise PermissionDenied(f"{caller.label} may not create files "
                                   f"owned by {asked!r} (administrators only)")
        return asked
    if parent["owner"] not in ("", ROOT_OWNER):
        return parent["owner"]
    return caller.user if caller.user != system_user else ROOT_OWNER
