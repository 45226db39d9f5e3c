"""The masters' metadata state machine over LMDB (see docs/state-machine.md).

`MetadataState.apply_batch` is the deterministic apply function of the Raft log: it reads
nothing but the LMDB state and the commands (time and every id chosen by the leader come in the
command), so every replica that applies the same entries ends with byte-identical databases.
Malformed commands never raise: they fail with INVALID_ARGUMENT, identically everywhere.
"""
from __future__ import annotations

import gc
import os
import shutil
import time
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping, NamedTuple

import lmdb
import msgpack

from gfs import paths
from gfs.fsutil import fsync_path, makedirs_durable
from gfs.errors import DataLoss, GfsError, InvalidArgument, NotFound, Unauthenticated
from gfs.auth.checker import VISIBILITIES
from gfs.auth.tokens import HASH_BYTES
from gfs.planted import planted
from master import capability_keys, compose, identity, inline, oidc, routes
from master import namespace as ns
from master import usage
from master.schema import (COMMON, INODE, MODE, SESSION, Check, boolean, bytes_of, bytes_up_to,
                           optional_bytes_in,
                           chunk_size_field, fields, int_in, list_of, map_of, one_of, pair_of,
                           parse_session, path_field, path_or_empty, text, xattrs_field)
from master.access import ROOT_OWNER, admin_overrides
from master.namespace import COMMITTED
from master.principal_cache import PrincipalCache
from master.store import (APPLIED, DB_NAMES, DIR, DIRS, MAX_DBS, MAX_U32, MAX_U64, NEXT_CHUNK, NEXT_INODE, NEXT_TRASH,
                          ROOT_INODE, U64, Tx, error_result, show, u64key)

MAX_REPLICATION = 16
FIRST_TRASH_ID = 1
# How far a restore moves the chunk-handle counter ahead (start_new_log): more chunks than were
# ever written after a backup was taken; handles are 64-bit.
RESTORE_HANDLE_GAP = 1 << 32
AS_SYSTEM = object()          # reads on behalf of the masters themselves (leader loops)
_DATA_FILE = "data.mdb"
# An install (install_target, install_written): PATH.installing (being written) -> PATH.staged
# (complete, durable) -> PATH, with the old PATH moved to PATH.retired in between.
_INSTALLING, _STAGED, _RETIRED = ".installing", ".staged", ".retired"


def _barrier(tx: Tx, args: dict) -> dict:
    return {}


def _expire_sessions(tx: Tx, args: dict) -> dict:
    expired, more = tx.expire_sessions(args["before"], args["limit"])
    return {"expired": expired, "more": more}


def _set_replicas(tx: Tx, args: dict) -> dict:
    handle = args["handle"]
    chunk = tx.chunk(handle)
    if chunk is None or chunk["version"] != args["version"]:
        return {"updated": False}
    chunk["replicas"] = args["replicas"]
    tx.put_chunk(handle, chunk)
    return {"updated": True}


def _forget_garbage(tx: Tx, args: dict) -> dict:
    return {"forgotten": sum(1 for handle in args["handles"] if tx.forget_garbage(handle))}


class _Op(NamedTuple):
    """An op's schema (required and optional fields, validated in this order), its handler, and
    whether clients send it (then it carries the caller's `auth`, and is audited)."""
    required: dict[str, Check]
    handler: Callable[[Tx, dict], dict]
    optional: Mapping[str, Check] = MappingProxyType({})
    audited: bool = False       # always recorded in the audit log (identity and admin changes)
    system: bool = False        # only the leader's own loops send it: no caller (`auth`) allowed


_REPLICAS = list_of(text)
_NAME = text
_VISIBILITY = one_of("", *VISIBILITIES)
_OIDC_CLAIMS = map_of({"sub": text}, optional={"email": text, "email_verified": boolean,
                                               "preferred_username": text})

def _compose(tx: Tx, args: dict) -> dict:
    """compose.compose, and the new file's extended attributes (the S3 gateway's multipart
    ETag and metadata) in the same command: the object appears with them, atomically."""
    result = compose.compose(tx, args)
    if args.get("xattrs"):
        record = tx.inode(result["inode"])
        record["xattrs"] = args["xattrs"]
        tx.put_inode(result["inode"], record)
    return result


_OPS: dict[str, _Op] = {
    "mkdir": _Op({"path": path_field, "parents": boolean, "mode": MODE, "owner": text}, ns.mkdir),
    "create": _Op({"path": path_field, "replication": int_in(1, MAX_REPLICATION),
                   "storage_class": one_of("", *ns.STORAGE_CLASSES), "chunk_size": chunk_size_field,
                   "mode": MODE, "owner": text, "overwrite": boolean}, ns.create,
                  optional={"default_class": one_of(*ns.STORAGE_CLASSES), "size": int_in(0),
                            "first_chunk": _REPLICAS}),
    "put_inline": _Op({"path": path_field, "data": bytes_up_to(inline.HARD_MAX),
                       "checksum": int_in(0), "replication": int_in(1, MAX_REPLICATION),
                       "storage_class": one_of("", *ns.STORAGE_CLASSES),
                       "chunk_size": chunk_size_field, "mode": MODE, "owner": text,
                       "overwrite": boolean}, inline.put_inline,
                      optional={"default_class": one_of(*ns.STORAGE_CLASSES),
                                "xattrs": xattrs_field}),
    "note_reads": _Op({"reads": list_of(pair_of(INODE, int_in(0)))}, ns.note_reads, system=True),
    "set_class": _Op({"path": path_field, "storage_class": one_of("", *ns.STORAGE_CLASSES),
                      "recursive": boolean}, ns.set_class),
    "set_attr": _Op({"path": path_field}, ns.set_attr,
                     optional={"mode": int_in(0, 0o7777), "mtime_ms": int_in(0, MAX_U64)}),
    "add_chunk": _Op({"inode": INODE, "index": int_in(0), "replicas": _REPLICAS}, ns.add_chunk),
    "commit": _Op({"inode": INODE, "size": int_in(0),
                   "chunks": list_of(map_of({"handle": int_in(1), "length": int_in(0),
                                             "checksum": int_in(0)}))}, ns.commit,
                   optional={"xattrs": xattrs_field}),
    "abort": _Op({"inode": INODE}, ns.abort),
    "compose": _Op({"dest": path_field, "sources": list_of(path_field), "overwrite": boolean,
                    "mode": MODE, "owner": text,
                    "storage_class": one_of("", *ns.STORAGE_CLASSES)}, _compose,
                   optional={"default_class": one_of(*ns.STORAGE_CLASSES),
                             "xattrs": xattrs_field}),
    "rename": _Op({"src": path_field, "dst": path_field, "overwrite": boolean}, ns.rename),
    "delete": _Op({"path": path_field, "recursive": boolean}, ns.delete,
                  optional={"trash": boolean, "user": text, "reap_over": int_in(0)}),
    "reap": _Op({"limit": int_in(1, 1_000_000)}, ns.reap, system=True),
    "set_replicas": _Op({"handle": int_in(1), "version": int_in(1), "replicas": _REPLICAS},
                        _set_replicas, system=True),
    "expire_uploads": _Op({"inodes": list_of(INODE), "before": int_in(0)}, ns.expire_uploads, system=True),
    "forget_garbage": _Op({"handles": list_of(int_in(1))}, _forget_garbage, system=True),
    "expire_sessions": _Op({"before": int_in(0), "limit": int_in(1, 1_000_000)},
                           _expire_sessions, system=True),
    "trash_restore": _Op({"id": int_in(1), "user": text, "dst": path_or_empty, "mode": MODE,
                          "owner": text}, ns.trash_restore),
    "trash_purge": _Op({"user": text, "all_users": boolean, "ids": list_of(int_in(1)),
                        "before": int_in(0)}, ns.trash_purge, optional={"reap_over": int_in(0)}),
    "barrier": _Op({}, _barrier, system=True),
    "set_visibility": _Op({"path": path_field, "visibility": _VISIBILITY}, ns.set_visibility,
                          audited=True),
    "chown": _Op({"path": path_field, "owner": _NAME, "recursive": boolean}, ns.chown,
                 audited=True),
    "bootstrap": _Op({"token_hash": bytes_of(HASH_BYTES)}, identity.bootstrap, audited=True, system=True),
    "user_add": _Op({"name": _NAME, "admin": boolean},
                    lambda tx, args: identity.add_user(tx, args, ns.make_home), audited=True),
    "user_set": _Op({"name": _NAME}, identity.set_user, audited=True,
                    optional={"disabled": boolean, "admin": boolean,
                              "quota": pair_of(int_in(0), int_in(0))}),
    "account_create": _Op({"name": _NAME, "owner": _NAME}, identity.create_account, audited=True),
    "account_delete": _Op({"name": _NAME}, identity.delete_account, audited=True),
    "token_create": _Op({"token_hash": bytes_of(HASH_BYTES), "name": _NAME, "principal": _NAME,
                         "expires": int_in(0), "scopes": list_of(text)}, identity.create_token,
                        audited=True),
    "token_revoke": _Op({"token": _NAME}, identity.revoke_token, audited=True),
    "note_token_use": _Op({"uses": list_of(pair_of(bytes_of(HASH_BYTES), int_in(0)))},
                          identity.note_token_use, system=True),
    "oidc_add": _Op({"issuer": text, "client": text, "audiences": list_of(text),
                     "user_claim": one_of(*oidc.USER_CLAIMS), "auto_create": boolean,
                     "allowed_domains": list_of(text), "token_ttl": int_in(1000),
                     "replace": boolean}, oidc.add_issuer, audited=True),
    "oidc_rm": _Op({"issuer": text}, oidc.remove_issuer, audited=True),
    "oidc_link": _Op({"issuer": text, "identity": text, "user": _NAME}, oidc.link, audited=True),
    "oidc_unlink": _Op({"issuer": text, "identity": text}, oidc.unlink, audited=True),
    "oidc_login": _Op({"issuer": text, "audience": text, "claims": _OIDC_CLAIMS,
                       "id_token_hash": bytes_of(HASH_BYTES), "id_token_expires": int_in(0),
                       "token_hash": bytes_of(HASH_BYTES), "token_name": _NAME, "ttl": int_in(0)},
                      lambda tx, args: oidc.login(tx, args, ns.make_home), audited=True),
    "oidc_refused": _Op({"identity": text, "reason": text}, oidc.refuse, audited=True),
    "route_put": _Op({"route": routes.route_field, "replace": boolean}, routes.put, audited=True),
    "route_remove": _Op({"name": _NAME}, routes.remove, audited=True),
    capability_keys.OP: _Op({"key_id": int_in(1, MAX_U32), "salt": capability_keys.check_salt},
                            capability_keys.apply, system=True),
}
_AUTH = {"auth": optional_bytes_in(HASH_BYTES, 2 * HASH_BYTES)}   # 2x: delegated (callers.py)


def _parse(command: dict) -> tuple[_Op, dict]:
    """The op and validated fields of a command (already known to be a map)."""
    if "op" not in command:
        raise InvalidArgument("missing field 'op'")
    op = command["op"]
    if not isinstance(op, str) or op not in _OPS:
        raise InvalidArgument(f"unknown op {show(op)}")
    spec = _OPS[op]
    return spec, fields(command, {**COMMON, **spec.required},
                        optional={**SESSION, **({} if spec.system else _AUTH), **spec.optional})


def _target(args: dict) -> str:
    """What a command is about, for the audit log."""
    if isinstance(args.get("route"), dict):
        return f"route {args['route'].get('name', '')}"
    for name in ("identity", "issuer", "path", "src", "dest", "name", "token", "principal",
                 "inode", "id"):
        if name in args:
            return str(args[name])
    return ""


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building a large table of fresh containers:
    its generational passes over a big heap would otherwise cost more than the table itself.
    Nothing built here is cyclic, so reference counting frees it all as usual."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# --- snapshot install --------------------------------------------------------------------------

def _check_env(directory: str) -> None:
    """DataLoss unless `directory` holds a metadata LMDB environment.

    A copy shorter than its meta page says (a torn or cut-off file) is refused before any page
    is read: LMDB reads pages through its memory map, and a page beyond the end of the file is
    a SIGBUS that kills the process (a chaos run lost a master so)."""
    try:
        env = lmdb.open(directory, readonly=True, lock=False, max_dbs=MAX_DBS, subdir=True)
        try:
            needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
            size = os.path.getsize(os.path.join(directory, _DATA_FILE))
            if size < needed:
                raise DataLoss(f"not a whole metadata store copy: {size} bytes where its meta "
                               f"page needs {needed} (cut off or torn)")
            with env.begin() as txn:
                present = txn.get(NEXT_INODE, db=env.open_db(b"meta", txn=txn, create=False))
        finally:
            env.close()
    except lmdb.Error as exc:
        raise DataLoss(f"not a metadata store copy: {exc}") from None
    if present is None:
        raise DataLoss("not a metadata store copy: no 'next_inode' counter")


def _recover_install(path: str, keep_installing: bool = False) -> None:
    """Finish an install that a crash interrupted after staging, else drop its leftovers
    (PATH.installing too, unless `keep_installing`: the install about to use it).

    `path` is missing only between the two renames of _swap_in, when PATH.staged is complete;
    if PATH.staged is missing too, the crash came after the second rename and before the
    clean-up, so nothing but PATH.retired is left and it goes back in place."""
    if not os.path.exists(path):
        for candidate in (path + _STAGED, path + _RETIRED):
            if os.path.isdir(candidate):
                os.rename(candidate, path)
                break
    for leftover in (_STAGED, _RETIRED) if keep_installing else (_INSTALLING, _STAGED, _RETIRED):
        shutil.rmtree(path + leftover, ignore_errors=True)


def _stage(path: str) -> str:
    """Verify the copy written into PATH.installing and make it PATH.staged, durably; return
    PATH.staged. A copy that is not a store is dropped (DataLoss)."""
    installing, staged = path + _INSTALLING, path + _STAGED
    try:
        _check_env(installing)
        fsync_path(installing)
    except BaseException:
        shutil.rmtree(installing, ignore_errors=True)
        raise
    os.rename(installing, staged)
    fsync_path(os.path.dirname(path))
    return staged


def _swap_in(staged: str, path: str) -> None:
    """Replace the directory `path` by `staged` (two renames; see _recover_install)."""
    retired = path + _RETIRED
    if os.path.exists(path):
        os.rename(path, retired)
    os.rename(staged, path)
    fsync_path(os.path.dirname(path))
    shutil.rmtree(retired, ignore_errors=True)


# --- the state machine -------------------------------------------------------------------------

class MetadataState:
    """The replicated namespace: apply log entries, answer reads, copy and restore snapshots."""

    def __init__(self, path: str, map_size: int = 1 << 34, *, sync: bool = True):
        self.path = os.path.abspath(path)
        _recover_install(self.path)
        makedirs_durable(self.path)
        # metasync=False: a commit fsyncs its data pages but not the meta page (one fdatasync
        # instead of two, the largest single cost of applying an entry). LMDB keeps the store
        # intact through a crash; it may undo the last commit, which the fsync'd Raft journal
        # replays (docs/raft.md). `sync_now` makes everything durable before the journal is
        # compacted.
        self._env = lmdb.open(self.path, map_size=map_size, max_dbs=MAX_DBS, sync=sync,
                              metasync=False, subdir=True)
        self._dbs = {name: self._env.open_db(name.encode()) for name in DB_NAMES}
        self._principals = PrincipalCache()     # callers, per identity revision
        self._init_root()
        # apply_deferred's open write transaction (see there): the entries applied into it,
        # and the last entry committed. Readers on other threads read `committed_index`.
        self._open: lmdb.Transaction | None = None
        self.open_entries = 0
        self.open_since = 0.0
        self.committed_index = self.applied_index()
        self.applied_through = self.committed_index
        if sync:
            fsync_path(self.path)         # the entry of data.mdb, which lmdb.open may have made

    def _init_root(self) -> None:
        """Create the root of a fresh store, and what a store written by older code lacks (the
        `trash` db is created by opening it; the `next_trash` counter, and directory totals and
        per-owner usage — a pure function of the namespace, so every replica agrees — here)."""
        with self._env.begin(write=True) as txn:
            tx = Tx(txn, self._dbs)
            if tx.inode(ROOT_INODE) is None:
                tx.put_inode(ROOT_INODE, ns.inode_record(DIR, ns.ROOT_MODE, ROOT_OWNER, 0))
                tx.set_counter(NEXT_INODE, ROOT_INODE + 1)
                tx.set_counter(NEXT_CHUNK, 1)
                tx.set_counter(APPLIED, 0)
                tx.set_counter(usage.LAYOUT, usage.CURRENT_LAYOUT)
            if tx.counter(NEXT_TRASH) == 0:
                tx.set_counter(NEXT_TRASH, FIRST_TRASH_ID)
            if tx.counter(DIRS) == 0:      # a fresh store, or one written before the counter
                tx.set_counter(DIRS, sum(1 for r in tx.inode_records() if r["type"] == DIR))
            if tx.counter(usage.LAYOUT) < usage.CURRENT_LAYOUT:
                usage.rebuild(tx, ROOT_INODE, [r["inode"] for r in tx.trash_records()])

    def close(self) -> None:
        """Close the store; entries applied but not committed are dropped (the journal holds
        them): commit_applied first, from the thread that applied them, to keep them."""
        if self._open is not None:
            self._open.abort()
            self._open = None
        self._env.close()

    def __enter__(self) -> MetadataState:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- applying ----------------------------------------------------------------------------

    def applied_index(self) -> int:
        with self._env.begin() as txn:
            return Tx(txn, self._dbs).counter(APPLIED)

    def apply(self, index: int, command: dict) -> dict | None:
        """Apply a log entry holding one command; None if the entry was already applied."""
        results = self.apply_batch(index, [command])
        return None if results is None else results[0]

    def apply_batch(self, index: int, commands: list[dict]) -> list[dict] | None:
        """Apply log entry `index` and commit it (with any entries apply_deferred left open);
        None if it was already applied. A failing entry changes nothing."""
        try:
            return self.apply_deferred(index, commands)
        finally:
            try:
                self.commit_applied()
            except BaseException:
                self.forget_open()
                raise

    def apply_deferred(self, index: int, commands: list[dict]) -> list[dict] | None:
        """Apply log entry `index` like apply_batch, into a write transaction left open for the
        next entries: `commit_applied` commits them together (one fdatasync for many entries).
        Only for entries committed in the Raft log: their results are final when this returns
        (a crash before the commit loses them from LMDB, and replaying the journal — which
        holds every committed entry — applies them again with the same results). Readers on
        other threads see them once committed (`committed_index`). Each entry runs in a child
        transaction, so an entry that fails leaves those before it in place."""
        if type(index) is not int or index < 1:
            raise ValueError(f"a log index must be an int >= 1, not {index!r}")
        if not isinstance(commands, list):
            raise TypeError(f"commands must be a list, not {type(commands).__name__}")
        if self._open is None:
            self._open = self._env.begin(write=True)
        child = self._env.begin(write=True, parent=self._open)
        try:
            results = self._apply_entry(child, index, commands)
        except BaseException:
            child.abort()
            self._principals.clear()        # it may hold what this transaction saw
            raise
        if results is None:
            child.abort()
            return None
        child.commit()
        if not self.open_entries:
            self.open_since = time.monotonic()
        self.open_entries += 1
        self.applied_through = index
        return results

    def commit_applied(self) -> bool:
        """Commit the entries apply_deferred applied (one fdatasync); True if there were any.
        `open_entries` drops to 0 only once they are in LMDB. If the commit fails they are gone
        from LMDB: the caller applies them again from the log, after `forget_open`."""
        txn, self._open = self._open, None
        if txn is None:
            return False
        try:
            txn.commit()
        except BaseException:
            self._principals.clear()        # it may hold what the lost transaction saw
            raise
        self.committed_index = self.applied_through
        self.open_entries = 0
        return True

    def forget_open(self) -> None:
        """After a failed commit_applied: the entries it held are not applied any more."""
        self.applied_through = self.committed_index
        self.open_entries = 0

    def _apply_entry(self, txn: lmdb.Transaction, index: int, commands: list[dict]) -> list[dict] | None:
        tx = Tx(txn, self._dbs)
        if index <= tx.counter(APPLIED):
            return None
        results = [self._apply_command(txn, command) for command in commands]
        tx.set_counter(APPLIED, index)
        return results

    def _apply_command(self, txn: lmdb.Transaction, command: Any) -> dict:
        """Exactly-once wrapper around one command (docs/state-machine.md, Exactly-once)."""
        try:
            session = parse_session(command)
        except InvalidArgument as exc:
            return error_result(exc)
        tx = Tx(txn, self._dbs)
        op = command.get("op") if isinstance(command.get("op"), str) else None
        if session is not None:
            stored = tx.session_result(session)
            if stored is not None:
                result, stored_op = stored
                if stored_op is not None and stored_op != op:
                    # Not a retry: the client used this seq for another command. Its result
                    # belongs to that command (and would not fit this one's answer).
                    return error_result(InvalidArgument(
                        f"seq {session.seq} of this client was used by another command "
                        f"({stored_op}): each command needs a seq of its own"))
                return result
        result = self._execute(txn, command)
        if planted("apply_twice"):
            result = self._execute(txn, command)
        if session is not None:
            now = command.get("now")
            tx.store_session(session, result,
                             now if isinstance(now, int) and 0 <= now <= MAX_U64 else 0, op)
            tx.prune_sessions(session.client_id, session.ack_seq)
        return result

    def _execute(self, txn: lmdb.Transaction, command: dict) -> dict:
        """Run one command in a child transaction, kept only if the command succeeds; the
        audit record (if any) goes into the parent, so a refusal is recorded too."""
        child = self._env.begin(write=True, parent=txn)
        spec, args, caller = None, None, None
        overrides: list[str] = []
        reset = admin_overrides.set(overrides)
        try:
            spec, args = _parse(command)
            tx = Tx(child, self._dbs)
            caller = (identity.SYSTEM if "auth" not in args
                      else identity.principal_for(tx, args["auth"], args["now"],
                                                  self._principals))
            args["caller"] = caller
            result = {"ok": spec.handler(tx, args)}
        except GfsError as exc:
            child.abort()
            result = error_result(exc)
        except BaseException:
            child.abort()
            raise
        else:
            child.commit()
        finally:
            admin_overrides.reset(reset)
        if spec is not None:
            self._audit(Tx(txn, self._dbs), command["op"], spec, args, caller, result,
                        overrides)
        return result

    @staticmethod
    def _audit(tx: Tx, op: str, spec: _Op, args: dict, caller, result: dict,
               overrides: list[str]) -> None:
        """Record identity and ownership changes, what an administrator did with rights only
        an administrator has (on others' files), and every refusal (docs/identity.md)."""
        error = result.get("err")
        refused = error is not None and error[0] in ("PERMISSION_DENIED", "UNAUTHENTICATED")
        if not (spec.audited or refused or (overrides and "auth" in args)):
            return
        who = caller.label if caller is not None else "a token that is not valid"
        target = _target(args) if not overrides or "path" in args else overrides[0]
        identity.audit(tx, args["now"], who, op, target,
                       f"{error[0]}: {error[1]}" if error else
                       ("ok (administrator's rights)" if overrides else "ok"))

    # --- reads -------------------------------------------------------------------------------

    @contextmanager
    def _reader(self) -> Iterator[Tx]:
        """A read-only transaction wrapped as a Tx."""
        txn = self._env.begin()
        try:
            yield Tx(txn, self._dbs)
        finally:
            txn.abort()

    def _caller(self, tx: Tx, auth, now: int):
        return (identity.SYSTEM if auth is AS_SYSTEM
                else identity.principal_for(tx, auth, now, self._principals))

    def stat(self, path: str, auth=AS_SYSTEM, now: int = 0, for_read: bool = False,
             span: tuple[int, int] | None = None) -> dict:
        """A file's or directory's attributes, as `auth` (a token hash; None = anonymous) may
        see them at `now` (ms); `for_read`: the caller wants the data (read permission);
        `span` (offset, length): only the chunks holding those bytes."""
        path = paths.normalize(path)
        with self._reader() as tx:
            return ns.stat(tx, self._caller(tx, auth, now), path, for_read, span)

    def list(self, path: str, start_after: str = "", limit: int = 1000, auth=AS_SYSTEM,
             now: int = 0, brief: bool = False) -> tuple[list[dict], str]:
        """One page of a directory's entries in name order (those `auth` may see), and the
        `start_after` of the next page ('' when this is the last). A file lists as itself.
        `brief`: without their chunk lists."""
        path = paths.normalize(path)
        text("start_after", start_after)
        int_in(1)("limit", limit)
        with self._reader() as tx:
            return ns.list_page(tx, self._caller(tx, auth, now), path, start_after, limit,
                                brief)

    def upload_chunks(self, inode: int, auth=AS_SYSTEM, now: int = 0) -> list[dict]:
        """The chunks of a pending upload `auth` created (NotFound for any other inode)."""
        with self._reader() as tx:
            return ns.upload_chunks(tx, self._caller(tx, auth, now), inode)

    def du(self, path: str, auth=AS_SYSTEM, now: int = 0) -> dict:
        path = paths.normalize(path)
        with self._reader() as tx:
            return ns.du(tx, self._caller(tx, auth, now), path)

    def whoami(self, auth, now: int) -> dict:
        """Who `auth` is, with its owner's usage and quota."""
        with self._reader() as tx:
            caller = self._caller(tx, auth, now)
            out = identity.describe_principal(caller)
            record = identity.user(tx, caller.user) if caller.user else None
            out["quota"] = record["quota"] if record else [0, 0]
            out["used"] = usage.usage(tx, caller.user) if caller.user else [0, 0]
            return out

    def principal(self, auth, now: int):
        """The Principal of a token hash at `now` (Unauthenticated if it is not valid)."""
        with self._reader() as tx:
            return self._caller(tx, auth, now)

    def users(self, auth, now: int) -> list[dict]:
        """Every user and service account for an administrator; others get themselves and
        their service accounts."""
        with self._reader() as tx:
            caller = self._caller(tx, auth, now)
            if caller.anonymous:
                raise Unauthenticated("listing users needs a signed-in user")
            return [{**record, "used": usage.usage(tx, record["name"])}
                    for record in identity.list_users(tx)
                    if caller.admin or caller.user in (record["name"], record["owner"])]

    def tokens(self, auth, now: int, everyone: bool = False) -> list[dict]:
        with self._reader() as tx:
            return identity.list_tokens(tx, self._caller(tx, auth, now), everyone)

    def audit_log(self, auth, now: int, limit: int = 100) -> list[dict]:
        with self._reader() as tx:
            identity.require_admin(self._caller(tx, auth, now), "reading the audit log")
            return identity.audit_records(tx, limit)

    def oidc_issuer(self, url: str) -> dict | None:
        """An OIDC issuer's settings (what the leader verifies an ID token against), or None."""
        with self._reader() as tx:
            return oidc.issuer(tx, url)

    def oidc_config(self, auth, now: int) -> dict:
        """Every trusted OIDC issuer and every link (administrators)."""
        with self._reader() as tx:
            identity.require_admin(self._caller(tx, auth, now), "listing OIDC issuers")
            return {"issuers": oidc.list_issuers(tx), "links": oidc.list_links(tx)}

    def auth_feed(self, after: int, limit: int = 1000) -> dict:
        """The identity changes after revision `after`, or a snapshot (master/identity.py)."""
        with self._reader() as tx:
            return identity.feed(tx, after, limit)

    def routes(self, auth, now: int) -> dict:
        """The gateway routes and their revision (administrators)."""
        with self._reader() as tx:
            return routes.listing(tx, self._caller(tx, auth, now))

    def routes_revision(self) -> int:
        with self._reader() as tx:
            return tx.counter(routes.ROUTES_REV)

    def has_users(self) -> bool:
        with self._reader() as tx:
            return identity.has_users(tx)

    def auth_revision(self) -> int:
        with self._reader() as tx:
            return tx.counter(identity.AUTH_REV)

    def file_chunks(self, inode: int) -> list[dict]:
        """The chunks of inode `inode` (committed or pending) in index order."""
        INODE("inode", inode)
        with self._reader() as tx:
            record = tx.inode(inode)
            if record is None:
                raise NotFound(f"no inode {inode}")
            return ns.chunk_infos(tx, record["chunks"])

    def unreferenced(self, handles: list[int]) -> dict[int, int | None]:
        """Of `handles`, those no file (committed or pending) references, each with the time it
        became garbage, or None when the metadata never knew it (e.g. written, never logged)."""
        with self._reader() as tx:
            return {h: tx.get("garbage", u64key(h)) for h in handles
                    if tx.get("chunks", u64key(h)) is None}

    def session_count(self) -> int:
        """Exactly-once results stored."""
        with self._reader() as tx:
            return tx.count("sessions")

    def oldest_session_ms(self) -> int | None:
        """When the oldest stored exactly-once result was stored (None: there is none)."""
        with self._reader() as tx:
            for key, _ in tx.raw_items("session_times"):
                return U64.unpack(key[:8])[0]
            return None

    def garbage_before(self, before_ms: int, limit: int = 1000) -> list[int]:
        """Handles whose garbage record is at most `before_ms` old (oldest handles first)."""
        with self._reader() as tx:
            out = []
            for key, since in tx.records("garbage"):
                if since <= before_ms:
                    out.append(U64.unpack(key)[0])
                    if len(out) >= limit:
                        break
            return out

    def chunk_table(self) -> list[dict]:
        """Every referenced chunk (committed files, pending uploads and files in the trash) in
        handle order, with what the repair loop needs of its file."""
        table: list[dict] = []
        append, unpack = table.append, msgpack.unpackb          # hot loop: local names
        # inode -> (replication, committed, storage class, last read ms)
        files: dict[int, tuple[int, bool, str, int]] = {}
        with self._reader() as tx, _gc_paused():
            for key, data in tx.raw_items("chunks"):
                chunk = unpack(data, raw=False)
                ino = chunk["inode"]
                file = files.get(ino)
                if file is None:
                    record = tx.inode(ino)
                    file = files[ino] = (record["replication"], record["state"] == COMMITTED,
                                         record["storage_class"],
                                         record.get("atime", record["mtime"]))
                append({"handle": int.from_bytes(key, "big"), "version": chunk["version"],
                        "length": chunk["length"], "checksum": chunk["checksum"],
                        "replicas": chunk["replicas"], "inode": ino,
                        "replication": file[0], "committed": file[1],
                        "storage_class": file[2], "atime": file[3]})
        return table

    def pending_uploads(self) -> list[dict]:
        """Every pending upload in inode order."""
        with self._reader() as tx:
            uploads = []
            for key, pending in tx.records("pending"):
                ino = U64.unpack(key)[0]
                uploads.append({"inode": ino, "path": pending["path"], "created": pending["created"],
                                "touched": ns.touched(pending), "chunks": len(tx.inode(ino)["chunks"])})
            return uploads

    def trash_list(self, user: str | None) -> list[dict]:
        """The trash records of `user` (every user's when None), ordered by (deleted, id)."""
        if user is not None:
            text("user", user)
        with self._reader() as tx:
            records = [r for r in tx.trash_records() if not r.get("reaping")
                       and (user is None or r["user"] == user)]
        return sorted(records, key=lambda r: (r["deleted"], r["id"]))

    def reaping(self) -> int:
        """How many deleted trees are still being removed by `reap` commands."""
        with self._reader() as tx:
            return sum(1 for r in tx.trash_records() if r.get("reaping"))

    def capability_keys(self) -> list[dict]:
        with self._reader() as tx:
            return capability_keys.read(tx)

    def inode_record(self, inode: int) -> dict | None:
        """The raw record of inode `inode` (pending uploads included), or None."""
        INODE("inode", inode)
        with self._reader() as tx:
            return tx.inode(inode)

    def counts(self) -> dict:
        """Sizes of the namespace: inodes = dirs + files + pending (uploads not yet committed);
        dirs and files include those in the trash."""
        with self._reader() as tx:
            inodes, pending = tx.count("inodes"), tx.count("pending")
            dirs = tx.counter(DIRS)          # kept on every mkdir and removal: no walk
            trash = tx.trash_records()
            return {"inodes": inodes, "dirs": dirs, "files": inodes - dirs - pending,
                    "pending": pending, "chunks": tx.count("chunks"), "garbage": tx.count("garbage"),
                    "trash": len(trash), "trash_bytes": sum(r["size"] for r in trash)}

    def dump(self) -> dict[str, list[tuple[bytes, bytes]]]:
        """Every database's raw (key, value) pairs: for tests and debugging."""
        with self._reader() as tx:
            return {name: tx.dump(name) for name in DB_NAMES}

    # --- snapshots ---------------------------------------------------------------------------

    def start_new_log(self, base_index: int) -> None:
        """A restored store (master/backup.py) is the start of a new Raft group's log, whose
        first entries stand for the restore itself: the store is the state at `base_index`,
        and the new group's own entries follow it. Its chunk-handle
        counter moves RESTORE_HANDLE_GAP ahead: chunks written after the backup was taken are
        still on the chunkservers (orphans now, collected after the grace period), and a new
        chunk taking one of their handles would let a stale replica pass for one of its own."""
        with self._env.begin(write=True) as txn:
            tx = Tx(txn, self._dbs)
            tx.set_counter(APPLIED, base_index)
            tx.set_counter(NEXT_CHUNK, tx.counter(NEXT_CHUNK) + RESTORE_HANDLE_GAP)

    def sync_now(self) -> None:
        """Make every commit durable (the meta page too): before the journal below it goes."""
        self._env.sync(True)

    def copy_to_fd(self, fd: int) -> None:
        """Write a consistent, compacted copy of data.mdb to the open file `fd`."""
        self._env.copyfd(fd, compact=True)

    def pin(self) -> "PinnedState":
        """The state as of now, kept for a later copy from any thread while applies go on
        (an LMDB read transaction: it sees this state however far the writers move on)."""
        return PinnedState(self._env, self._env.begin(), self._dbs)

    @staticmethod
    def install_target(path: str) -> str:
        """The file to write the next store copy for `path` into (data.mdb in a fresh
        PATH.installing): written and fsync'd by the caller, then put in place by
        install_written. A MetadataState may stay open on `path` meanwhile."""
        path = os.path.abspath(path)
        installing = path + _INSTALLING
        shutil.rmtree(installing, ignore_errors=True)
        makedirs_durable(installing)
        return os.path.join(installing, _DATA_FILE)

    @staticmethod
    def install_written(path: str) -> None:
        """Atomically make `path` the store copied into install_target(path) (made by
        copy_to_fd, the caller has fsync'd it). The caller has closed any MetadataState open
        on `path`."""
        path = os.path.abspath(path)
        _recover_install(path, keep_installing=True)
        _swap_in(_stage(path), path)

    @staticmethod
    def install_abandon(path: str) -> None:
        """Drop a copy written into install_target(path) that is not to be installed."""
        shutil.rmtree(os.path.abspath(path) + _INSTALLING, ignore_errors=True)

    @classmethod
    def install_copy(cls, mdb_file: str, path: str) -> None:
        """Atomically make `path` an environment directory holding a copy of `mdb_file` (made
        by copy_to_fd). The caller has closed any MetadataState open on `path`."""
        target = cls.install_target(path)
        shutil.copyfile(mdb_file, target)
        fsync_path(target)
        cls.install_written(path)


class PinnedState:
    """A read transaction on a store, to copy the state it saw (MetadataState.pin). Holding it
    keeps LMDB from reusing the pages it sees: close it once copied."""

    def __init__(self, env, txn, dbs):
        self._env, self._txn, self._dbs = env, txn, dbs

    def applied_index(self) -> int:
        """The last log entry applied in the state pinned."""
        return Tx(self._txn, self._dbs).counter(APPLIED)

    def copy_to_fd(self, fd: int) -> None:
        """A compacted copy of data.mdb as of the pin to the open file `fd`."""
        self._env.copyfd(fd, compact=True, txn=self._txn)

    def close(self) -> None:
        try:
            self._txn.abort()
        except lmdb.Error:             # the store was closed meanwhile: nothing left to free
            pass
