"""OpenID Connect sign-in in the replicated state: trusted issuers, the links from an external
identity to a gfs user, and the sign-in itself (docs/identity.md, "Signing in with OIDC").

Databases:
    oidc_issuers  issuer URL -> {issuer, client_id, audiences, user_claim, auto_create,
                  allowed_domains, token_ttl (ms), created, by}
    oidc_links    issuer "\\n" identity -> {user, created, how: "auto"|"admin"}; the identity
                  is the value of the issuer's `user_claim` in the ID token
    oidc_used     expiry (u64 ms) + sha256(ID token) -> 1: ID tokens already used to sign in,
                  until they expire (a replayed ID token is refused)

The leader checks what needs the network or a clock of its own (the token's signature against
the issuer's published keys, `iss`, `aud`, `exp`, `iat`, `nonce`) before proposing `oidc_login`;
everything that depends on the replicated state — is the issuer still trusted, does it still
accept that audience, which user is this, may one be created, is that user disabled — is
decided here, at the command's position in the log, with the time that came in the command.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

from gfs.auth.checker import Principal
from gfs.auth.principals import USER
from gfs.auth.scopes import check_user_name
from gfs.errors import (AlreadyExists, FailedPrecondition, InvalidArgument, NotFound,
                        PermissionDenied, Unauthenticated)
from master import identity
from master.store import Tx, u64key

ISSUERS, LINKS, USED = "oidc_issuers", "oidc_links", "oidc_used"
USER_CLAIMS = ("email", "sub", "preferred_username")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
PRUNE_PER_LOGIN = 64            # expired oidc_used records dropped by each sign-in, at most
MAX_NAME = 32


# --- issuers -----------------------------------------------------------------------------------

def check_issuer_url(url: str) -> str:
    """An issuer identifier as OIDC Discovery defines it: an https URL without query or
    fragment (plain http only on a loopback host, where nothing crosses a network)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        raise InvalidArgument(f"issuer {url!r} is not a URL") from None
    if parts.query or parts.fragment or not host:
        raise InvalidArgument(f"issuer {url!r} must be a URL like https://idp.example.com "
                              "(no query or fragment)")
    if parts.scheme != "https" and not (parts.scheme == "http" and host in LOOPBACK_HOSTS):
        raise InvalidArgument(f"issuer {url!r} must use https (plain http only on a loopback "
                              "address)")
    return url


def issuer(tx: Tx, url: str) -> dict | None:
    return tx.get(ISSUERS, url.encode())


def add_issuer(tx: Tx, args: dict) -> dict:
    """An administrator trusts an issuer (or, with `replace`, changes its settings; its links
    stay)."""
    identity.require_admin(args["caller"], "configuring an OIDC issuer")
    url = check_issuer_url(args["issuer"])
    old = issuer(tx, url)
    if old is not None and not args["replace"]:
        raise AlreadyExists(f"issuer {url} is already configured (change it with --replace)")
    if not args["client"]:
        raise InvalidArgument("an issuer needs the client id this cluster is registered with")
    for domain in args["allowed_domains"]:
        if not re.fullmatch(r"[a-z0-9.-]+\.[a-z0-9-]+", domain):
            raise InvalidArgument(f"allowed domain {domain!r} is not a lower-case domain name")
    audiences = [args["client"]] + [a for a in args["audiences"] if a != args["client"]]
    record = {"issuer": url, "client_id": args["client"], "audiences": audiences,
              "user_claim": args["user_claim"], "auto_create": args["auto_create"],
              "allowed_domains": sorted(set(args["allowed_domains"])),
              "token_ttl": args["token_ttl"],
              "created": old["created"] if old else args["now"], "by": args["caller"].user}
    tx.put(ISSUERS, url.encode(), record)
    return record


def remove_issuer(tx: Tx, args: dict) -> dict:
    """Stop trusting an issuer and forget its links (tokens it issued stay until revoked)."""
    identity.require_admin(args["caller"], "removing an OIDC issuer")
    url = args["issuer"]
    if not tx.delete(ISSUERS, url.encode()):
        raise NotFound(f"no OIDC issuer {url}")
    prefix = _link_key(url, "")
    gone = [key for key, _ in tx.raw_items(LINKS) if key.startswith(prefix)]
    for key in gone:
        tx.delete(LINKS, key)
    return {"issuer": url, "links": len(gone)}


def list_issuers(tx: Tx) -> list[dict]:
    return [record for _, record in tx.records(ISSUERS)]


# --- links -------------------------------------------------------------------------------------

def _link_key(url: str, who: str) -> bytes:
    return f"{url}\n{who}".encode()


def link(tx: Tx, args: dict) -> dict:
    """An administrator links an external identity (the issuer's `user_claim` value) to a user."""
    identity.require_admin(args["caller"], "linking an OIDC identity")
    url, who, name = args["issuer"], args["identity"], args["user"]
    if not who:
        raise InvalidArgument("an identity to link is the value of the issuer's user claim, "
                              "e.g. an email")
    if issuer(tx, url) is None:
        raise NotFound(f"no OIDC issuer {url}")
    record = identity.user(tx, name)
    if record is None or record["kind"] != USER:
        raise NotFound(f"no user {name!r}")
    old = tx.get(LINKS, _link_key(url, who))
    if old is not None and old["user"] != name:
        raise AlreadyExists(f"{who} at {url} is already linked to {old['user']!r} "
                            "(unlink it first)")
    tx.put(LINKS, _link_key(url, who), {"user": name, "created": args["now"], "how": "admin"})
    return {"issuer": url, "identity": who, "user": name}


def unlink(tx: Tx, args: dict) -> dict:
    identity.require_admin(args["caller"], "unlinking an OIDC identity")
    if not tx.delete(LINKS, _link_key(args["issuer"], args["identity"])):
        raise NotFound(f"{args['identity']} at {args['issuer']} is not linked to any user")
    return {"issuer": args["issuer"], "identity": args["identity"]}


def list_links(tx: Tx) -> list[dict]:
    out = []
    for key, record in tx.records(LINKS):
        url, _, who = key.decode().partition("\n")
        out.append({"issuer": url, "identity": who, **record})
    return out


# --- signing in --------------------------------------------------------------------------------

def refuse(tx: Tx, args: dict) -> dict:
    """A sign-in the leader refused before proposing (bad signature, wrong audience...): only
    so that the refusal is in the audit log, like every other one."""
    raise Unauthenticated(args["reason"])


def _identity_of(record: dict, claims: dict) -> str:
    """The value of the issuer's user claim; an email only when the issuer says it verified it."""
    name = record["user_claim"]
    value = claims.get(name, "")
    if not value:
        scope = {"email": "email", "preferred_username": "profile"}.get(name)
        hint = f" (the client asks for the '{scope}' scope)" if scope else ""
        raise Unauthenticated(f"the ID token has no {name!r} claim, which {record['issuer']} "
                              f"maps to gfs users{hint}")
    if name == "email" and claims.get("email_verified") is not True:
        raise Unauthenticated(f"the ID token's email {value!r} is not marked verified "
                              "(email_verified) by the issuer")
    return value


def _check_domain(record: dict, claims: dict) -> None:
    if not record["allowed_domains"]:
        return
    email = claims.get("email", "")
    if not email or claims.get("email_verified") is not True:
        raise PermissionDenied(f"{record['issuer']} admits only verified emails of "
                               f"{', '.join(record['allowed_domains'])}; the ID token has none")
    domain = email.rpartition("@")[2].lower()
    if domain not in record["allowed_domains"]:
        raise PermissionDenied(f"{email} is not in a domain that {record['issuer']} admits "
                               f"({', '.join(record['allowed_domains'])})")


def user_name_for(claims: dict) -> str:
    """The name an auto-created user gets: preferred_username, else the email's local part,
    else the subject, made a valid gfs user name (lower case, [a-z0-9_-], at most 32)."""
    raw = (claims.get("preferred_username") or claims.get("email", "").partition("@")[0]
           or claims.get("sub", ""))
    name = re.sub(r"[^a-z0-9_-]+", "-", raw.lower()).strip("-")[:MAX_NAME]
    if not name or not re.match(r"[a-z_]", name):
        name = ("u" + name)[:MAX_NAME]
    return name


def _auto_create(tx: Tx, record: dict, who: str, claims: dict, now: int, make_home) -> str:
    name = user_name_for(claims)
    check_user_name(name)
    how_to_link = f"an administrator can link them: gfs oidc link {record['issuer']} {who} USER"
    if name in identity.RESERVED_NAMES or identity.user(tx, name) is not None:
        raise FailedPrecondition(f"{who} at {record['issuer']} would become user {name!r}, "
                                 f"but that name is taken by a user not linked to it; "
                                 f"{how_to_link}")
    identity.put_user(tx, identity.new_user(name, USER, now))
    make_home(tx, name, now)
    tx.put(LINKS, _link_key(record["issuer"], who), {"user": name, "created": now,
                                                      "how": "auto"})
    return name


def _note_used(tx: Tx, key: bytes, now: int) -> None:
    """Refuse an ID token already used; remember this one until it expires; forget a few
    expired ones."""
    if tx.get(USED, key) is not None:
        raise Unauthenticated("this ID token was already used to sign in (sign in again)")
    tx.put(USED, key, 1)
    cursor, stale = tx.cursor(USED), []
    if cursor.first():
        for raw, _ in cursor:
            if int.from_bytes(raw[:8], "big") >= now or len(stale) >= PRUNE_PER_LOGIN:
                break
            stale.append(raw)
    for raw in stale:
        tx.delete(USED, raw)


def login(tx: Tx, args: dict, make_home) -> dict:
    """Sign a person in whose ID token the leader verified: map them to a gfs user (creating
    one if the issuer allows it) and store the hash of the gfs token the client made, named
    `token_name` (a live token of that name of theirs is revoked: signing in again from the
    same machine replaces it)."""
    url, claims, now = args["issuer"], args["claims"], args["now"]
    args["identity"] = f"{url} sub={claims.get('sub', '')}"     # for the audit log
    record = issuer(tx, url)
    if record is None:
        raise Unauthenticated(f"issuer {url} is not configured on this cluster")
    if args["audience"] not in record["audiences"]:
        raise Unauthenticated(f"ID token audience {args['audience']!r} is not this cluster's "
                              f"client id {record['client_id']!r}")
    who = _identity_of(record, claims)
    args["identity"] = f"{url} {record['user_claim']}={who}"
    _check_domain(record, claims)
    _note_used(tx, u64key(args["id_token_expires"]) + args["id_token_hash"], now)
    linked = tx.get(LINKS, _link_key(url, who))
    created = linked is None
    if linked is not None:
        name = linked["user"]
    elif record["auto_create"]:
        name = _auto_create(tx, record, who, claims, now, make_home)
    else:
        raise PermissionDenied(f"no gfs user is linked to {who} at {url}, and this issuer does "
                               f"not create users (an administrator can: gfs oidc link {url} "
                               f"{who} USER, or gfs oidc add {url} ... --auto-create --replace)")
    user = identity.user(tx, name)
    if user is None:
        raise FailedPrecondition(f"{who} at {url} is linked to user {name!r}, which no longer "
                                 "exists")
    if user["disabled"]:
        raise PermissionDenied(f"user {name!r} is disabled")
    ttl = min(args["ttl"] or record["token_ttl"], record["token_ttl"])
    as_user = Principal(user=name, admin=user["admin"])
    identity.revoke_named(tx, name, args["token_name"], now)
    token = identity.create_token(tx, {
        "caller": as_user, "principal": name, "token_hash": args["token_hash"],
        "name": args["token_name"], "expires": now + ttl, "scopes": ["*"], "now": now})
    return {"user": name, "created": created, "identity": who, "token": token}
