"""Identity in the replicated state: users, service accounts, tokens, quotas and the audit log.

Databases (docs/identity.md):
    users   name -> {name, kind: "user"|"account", owner (accounts), admin, disabled, created,
                     quota: [bytes, files] (0 = no limit)}
    tokens  sha256(token) -> {id, name, principal (a user or account name), created, expires
                     (0 = never), scopes (canonical texts), revoked (0 or when)}
    audit   sequence number -> {at, who, op, target, result}, the newest AUDIT_KEEP kept

Who calls is decided here, at the command's position in the log: a command carries the hash of
the token it came with (`auth`), and `principal_for` resolves it against the state the command
is applied to — a token revoked, expired or disabled before that point cannot slip through.
"""
from __future__ import annotations

from gfs.auth.checker import Principal
from gfs.auth.principals import ACCOUNT, USER, resolve
from gfs.auth.scopes import check_user_name, format_scope, parse_scopes
from gfs.auth.tokens import HASH_BYTES, short_id
from gfs.errors import (AlreadyExists, FailedPrecondition, InvalidArgument, NotFound,
                        PermissionDenied, Unauthenticated)
from master.principal_cache import PrincipalCache
from master.store import Tx, u64key

USERS, TOKENS, AUDIT, AUTH_LOG = "users", "tokens", "audit", "auth_log"
AUTH_REV = b"auth_rev"          # meta counter: the revision of the last identity change
AUTH_LOG_KEEP = 10_000          # changes kept for watchers; one further behind gets a snapshot
NEXT_AUDIT = b"next_audit"
AUDIT_KEEP = 10_000
ADMIN_NAME = "admin"
RESERVED_NAMES = frozenset({"root", "system", "anonymous", "nobody"})

# Who runs a command that carries no `auth` field: the leader's own loops (and unit tests).
SYSTEM = Principal(user="system", admin=True)


def user(tx: Tx, name: str) -> dict | None:
    return tx.get(USERS, name.encode())


def put_user(tx: Tx, record: dict) -> None:
    tx.put(USERS, record["name"].encode(), record)
    changed(tx, "user", record["name"], record)


def changed(tx: Tx, kind: str, key, record: dict | None) -> None:
    """Log an identity change for watchers (the Watch feed): a user or token record as it is
    now (None: deleted), or a path's new visibility."""
    rev = tx.counter(AUTH_REV) + 1
    tx.set_counter(AUTH_REV, rev)
    tx.put(AUTH_LOG, u64key(rev), {"kind": kind, "key": key, "record": record})
    if rev > AUTH_LOG_KEEP:
        tx.delete(AUTH_LOG, u64key(rev - AUTH_LOG_KEEP))


def has_users(tx: Tx) -> bool:
    return tx.count(USERS) > 0


def principal_for(tx: Tx, auth, now: int, cache: PrincipalCache | None = None) -> Principal:
    """The caller of a command or read: anonymous for None, else the principal of the token
    with hash `auth` (see gfs/auth/principals.py), through `cache` at this transaction's
    identity revision when one is given (master/principal_cache.py)."""
    if auth is None:
        return Principal()

    def fresh() -> tuple[Principal, int]:
        if len(auth) == 2 * HASH_BYTES:
            return _delegated(tx, auth[:HASH_BYTES], auth[HASH_BYTES:], now)
        record = tx.get(TOKENS, auth)
        return resolve(record, lambda name: user(tx, name), now), record["expires"]
    if cache is None:
        return fresh()[0]
    return cache.resolve(auth, tx.counter(AUTH_REV), now, fresh)


ANONYMOUS_DELEGATE = bytes(HASH_BYTES)


def _delegated(tx: Tx, service: bytes, delegate: bytes, now: int) -> tuple[Principal, int]:
    """A service acting for another token (master/callers.py: the S3 gateway verified that
    token's request signature): the service's own token must be an administrator's, unscoped
    (it could do everything anyway); the command then runs as the delegate's principal (all
    zeros: anonymous), resolved here at this position in the log like any other."""
    record = tx.get(TOKENS, service)
    acting = resolve(record, lambda name: user(tx, name), now)
    if not acting.admin or acting.scopes is not None:
        raise PermissionDenied(f"{acting.label} may not act for other tokens (that needs an "
                               f"administrator's unscoped token)")
    if delegate == ANONYMOUS_DELEGATE:
        return Principal(), record["expires"]
    target = tx.get(TOKENS, delegate)
    principal = resolve(target, lambda name: user(tx, name), now)
    ends = [e for e in (record["expires"], target["expires"]) if e]
    return principal, min(ends) if ends else 0


def describe_principal(p: Principal) -> dict:
    return {"user": p.user, "admin": p.admin, "account": p.account, "token": p.token,
            "scopes": ["*"] if p.scopes is None else [format_scope(s) for s in p.scopes],
            "anonymous": p.anonymous}


# --- guards ------------------------------------------------------------------------------------

def require_admin(caller: Principal, what: str) -> None:
    if not caller.admin:
        raise PermissionDenied(f"{caller.label} is not an administrator "
                               f"({what} needs one)")
    _require_unscoped(caller, what)


def _require_unscoped(caller: Principal, what: str) -> None:
    """Identities are managed with a token holding all of its owner's rights, never a scoped
    one: otherwise a narrow token could mint itself a broad one."""
    if caller.scopes is not None:
        raise PermissionDenied(f"{caller.label} is a scoped token; {what} "
                               "needs a token with all of its owner's rights")


def _require_manager(tx: Tx, caller: Principal, principal: str, what: str) -> dict:
    """The user or account `principal`, which `caller` may manage (its own, or an admin)."""
    record = user(tx, principal)
    if record is None:
        raise NotFound(f"no user or service account {principal!r}")
    owner = record["name"] if record["kind"] == USER else record["owner"]
    if caller.anonymous:
        raise Unauthenticated(f"{what} needs a signed-in user")
    if not caller.admin and owner != caller.user:
        raise PermissionDenied(f"{caller.label} cannot {what} for "
                               f"{principal!r} (not theirs)")
    _require_unscoped(caller, what)
    return record


# --- commands ----------------------------------------------------------------------------------

def new_user(name: str, kind: str, now: int, admin: bool = False, owner: str = "") -> dict:
    return {"name": name, "kind": kind, "owner": owner, "admin": admin, "disabled": False,
            "created": now, "quota": [0, 0]}


def _check_new_name(tx: Tx, name: str) -> None:
    check_user_name(name)
    if name in RESERVED_NAMES:
        raise InvalidArgument(f"{name!r} is a reserved name")
    if user(tx, name) is not None:
        raise AlreadyExists(f"user or service account {name!r} already exists")


def bootstrap(tx: Tx, args: dict) -> dict:
    """The first start of a cluster: an `admin` user with one token (only its hash is here).
    Does nothing once any user exists, so every master may propose it."""
    if args["caller"] is not SYSTEM:
        raise PermissionDenied("bootstrap is the leader's own command")
    if has_users(tx):
        return {"created": False}
    put_user(tx, new_user(ADMIN_NAME, USER, args["now"], admin=True))
    _store_token(tx, args["token_hash"], "bootstrap", ADMIN_NAME, args["now"], 0, ["*"])
    return {"created": True}


def add_user(tx: Tx, args: dict, make_home) -> dict:
    """An administrator adds a user; `make_home(tx, name)` gives them their namespace."""
    require_admin(args["caller"], "adding a user")
    name = args["name"]
    _check_new_name(tx, name)
    put_user(tx, new_user(name, USER, args["now"], admin=args["admin"]))
    return {"name": name, "home": make_home(tx, name, args["now"])}


def set_user(tx: Tx, args: dict) -> dict:
    """An administrator disables/enables a user, makes one admin, or sets a quota."""
    caller = args["caller"]
    require_admin(caller, "changing a user")
    record = user(tx, args["name"])
    if record is None or record["kind"] != USER:
        raise NotFound(f"no user {args['name']!r}")
    for flag in ("disabled", "admin"):
        if flag in args:
            record[flag] = args[flag]
    if "quota" in args:
        record["quota"] = list(args["quota"])
    if record["name"] == caller.user and (record["disabled"] or not record["admin"]):
        raise FailedPrecondition("an administrator cannot disable or demote themselves")
    put_user(tx, record)
    return {"name": record["name"], "disabled": record["disabled"], "admin": record["admin"],
            "quota": record["quota"]}


def create_account(tx: Tx, args: dict) -> dict:
    caller = args["caller"]
    owner = args["owner"] or caller.user
    _require_manager(tx, caller, owner, "creating a service account")
    if user(tx, owner)["kind"] != USER:
        raise InvalidArgument(f"{owner!r} is a service account; service accounts belong to users")
    _check_new_name(tx, args["name"])
    put_user(tx, new_user(args["name"], ACCOUNT, args["now"], owner=owner))
    return {"name": args["name"], "owner": owner}


def delete_account(tx: Tx, args: dict) -> dict:
    record = _require_manager(tx, args["caller"], args["name"], "deleting a service account")
    if record["kind"] != ACCOUNT:
        raise InvalidArgument(f"{args['name']!r} is a user, not a service account")
    revoked = _revoke_all(tx, args["name"], args["now"])
    tx.delete(USERS, args["name"].encode())
    changed(tx, "user", args["name"], None)
    return {"name": args["name"], "revoked": revoked}


def _store_token(tx: Tx, token_hash: bytes, name: str, principal: str, now: int, expires: int,
                 scopes: list[str]) -> dict:
    record = {"id": short_id(token_hash), "name": name, "principal": principal, "created": now,
              "expires": expires, "scopes": scopes, "revoked": 0}
    tx.put(TOKENS, token_hash, record)
    changed(tx, "token", token_hash, record)
    return record


def _live_tokens(tx: Tx, principal: str | None = None):
    for key, record in tx.records(TOKENS):
        if not record["revoked"] and (principal is None or record["principal"] == principal):
            yield key, record


def create_token(tx: Tx, args: dict) -> dict:
    """A token for the caller (or one of its service accounts; an admin: for anyone). Its
    scopes are stored in canonical form; it never exceeds its owner (checked at each use)."""
    caller, principal = args["caller"], args["principal"] or args["caller"].user
    _require_manager(tx, caller, principal, "creating a token")
    if len(args["token_hash"]) != HASH_BYTES:
        raise InvalidArgument(f"a token hash is {HASH_BYTES} bytes")
    if tx.get(TOKENS, args["token_hash"]) is not None:
        raise AlreadyExists("that token already exists")
    if any(r["name"] == args["name"] for _, r in _live_tokens(tx, principal)):
        raise AlreadyExists(f"{principal!r} already has a token named {args['name']!r}: revoke "
                            "it first or choose another name")
    parsed = parse_scopes(args["scopes"])
    scopes = ["*"] if parsed is None else sorted({format_scope(s) for s in parsed})
    if args["expires"] and args["expires"] <= args["now"]:
        raise InvalidArgument("the token would expire before it is created")
    record = _store_token(tx, args["token_hash"], args["name"], principal, args["now"],
                          args["expires"], scopes)
    return {k: record[k] for k in ("id", "name", "principal", "created", "expires", "scopes")}


def revoke_token(tx: Tx, args: dict) -> dict:
    """Revoke tokens by public id (or its prefix) or by name; the caller's own and those of its
    service accounts (an admin: anyone's)."""
    caller, which = args["caller"], args["token"]
    if caller.anonymous:
        raise Unauthenticated("revoking a token needs a signed-in user")
    _require_unscoped(caller, "revoking a token")
    matches = []
    for key, record in _live_tokens(tx):
        if which not in (record["name"], record["id"]) and not (
                len(which) >= 6 and record["id"].startswith(which)):
            continue
        if caller.admin or _owner_of(tx, record["principal"]) == caller.user:
            matches.append((key, record))
    if not matches:
        raise NotFound(f"no live token {which!r} of yours")
    named = {record["principal"] for _, record in matches}
    if len(matches) > 1 and len(named) > 1:
        raise FailedPrecondition(f"{which!r} names tokens of several owners "
                                 f"({', '.join(sorted(named))}): revoke by id")
    for key, record in matches:
        _revoke(tx, key, record, args["now"])
    return {"revoked": [record["id"] for _, record in matches]}


def _revoke(tx: Tx, key: bytes, record: dict, now: int) -> None:
    record["revoked"] = now
    tx.put(TOKENS, key, record)
    changed(tx, "token", key, record)


def revoke_named(tx: Tx, principal: str, name: str, now: int) -> int:
    """Revoke `principal`'s live tokens named `name` (a sign-in replacing its own token)."""
    found = [(key, r) for key, r in _live_tokens(tx, principal) if r["name"] == name]
    for key, record in found:
        _revoke(tx, key, record, now)
    return len(found)


def _revoke_all(tx: Tx, principal: str, now: int) -> int:
    found = list(_live_tokens(tx, principal))
    for key, record in found:
        _revoke(tx, key, record, now)
    return len(found)


def _owner_of(tx: Tx, principal: str) -> str:
    record = user(tx, principal)
    if record is None:
        return ""
    return record["name"] if record["kind"] == USER else record["owner"]


def note_token_use(tx: Tx, args: dict) -> dict:
    """The leader's batched record of when tokens were last used (not an identity change)."""
    noted = 0
    for token_hash, at in args["uses"]:
        record = tx.get(TOKENS, token_hash)
        if record is not None and at > record.get("last_used", 0):
            record["last_used"] = at
            tx.put(TOKENS, token_hash, record)
            noted += 1
    return {"noted": noted}


# --- reads -------------------------------------------------------------------------------------

def list_users(tx: Tx) -> list[dict]:
    return [record for _, record in tx.records(USERS)]


def list_tokens(tx: Tx, caller: Principal, everyone: bool) -> list[dict]:
    """The caller's tokens and its accounts' (an admin with `everyone`: all), without hashes."""
    if everyone:
        require_admin(caller, "listing every token")
    out = []
    for _, record in tx.records(TOKENS):
        if everyone or _owner_of(tx, record["principal"]) == caller.user:
            out.append(dict(record))
    return sorted(out, key=lambda r: (r["principal"], r["created"], r["id"]))


# --- audit -------------------------------------------------------------------------------------

def audit(tx: Tx, at: int, who: str, op: str, target: str, result: str) -> None:
    """Append one audit record, dropping the oldest beyond AUDIT_KEEP."""
    seq = tx.allocate(NEXT_AUDIT)
    tx.put(AUDIT, u64key(seq), {"at": at, "who": who, "op": op, "target": target,
                                "result": result})
    if seq >= AUDIT_KEEP:
        tx.delete(AUDIT, u64key(seq - AUDIT_KEEP))


def audit_records(tx: Tx, limit: int) -> list[dict]:
    """The newest `limit` audit records, oldest first."""
    cursor = tx.cursor(AUDIT)
    out: list[dict] = []
    if cursor.last():
        for _, data in cursor.iterprev():
            out.append(tx.decode(data))
            if len(out) >= limit:
                break
    return out[::-1]


# --- the Watch feed ----------------------------------------------------------------------------

def feed(tx: Tx, after: int, limit: int) -> dict:
    """What a watcher at revision `after` needs next: the changes after it (at most `limit`),
    or — when it starts (0) or has fallen behind what is kept — a snapshot of every user and
    token. {"revision", "snapshot": {"users", "tokens"}} or {"revision", "changes"}."""
    revision = tx.counter(AUTH_REV)
    if after == 0 or after < revision - AUTH_LOG_KEEP or after > revision:
        return {"revision": revision, "snapshot": {
            "users": list_users(tx), "tokens": [[key, record] for key, record in tx.records(TOKENS)]}}
    changes, cursor = [], tx.cursor(AUTH_LOG)
    if after < revision and cursor.set_key(u64key(after + 1)):
        for key, data in cursor:
            changes.append({"revision": int.from_bytes(key, "big"), **tx.decode(data)})
            if len(changes) >= limit:
                break
    return {"revision": changes[-1]["revision"] if changes else after, "changes": changes}
