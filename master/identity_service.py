"""The Identity gRPC service (proto/identity.proto): users, service accounts, tokens,
visibility, ownership, usage and the audit log, each run as the calling token."""
from __future__ import annotations

import asyncio
import time

from gfs.auth import s3keys
from gfs.auth.tokens import HASH_BYTES
from gfs.errors import FailedPrecondition, GfsError, InvalidArgument, Unauthenticated
from gfs.clock import now_ms
from master.callers import caller_of
from master.service import MasterService, abort_with, rpc
from proto import identity_pb2 as ipb
from proto import identity_pb2_grpc as ipb_grpc
from proto import master_pb2 as pb

MAX_TTL_S = 100 * 365 * 86400.0
WATCH_POLL_S = 0.05             # how often a Watch stream looks for new changes
WATCH_HEARTBEAT_S = 0.5         # the most time between two events of a Watch stream


def _user(u: dict) -> ipb.User:
    return ipb.User(name=u["name"], kind=u["kind"], owner=u["owner"], admin=u["admin"],
                    disabled=u["disabled"], created_ms=u["created"], quota_bytes=u["quota"][0],
                    quota_files=u["quota"][1], used_bytes=u.get("used", [0, 0])[0],
                    used_files=u.get("used", [0, 0])[1])


def _watch_event(feed: dict) -> ipb.WatchEvent:
    """One WatchEvent from what `state.auth_feed` returned."""
    event = ipb.WatchEvent(revision=feed["revision"], heartbeat_s=WATCH_HEARTBEAT_S)
    if "snapshot" in feed:
        event.snapshot = True
        event.users.extend(_user(u) for u in feed["snapshot"]["users"])
        event.tokens.extend(ipb.TokenRecord(hash=key, token=_token(t))
                            for key, t in feed["snapshot"]["tokens"])
        return event
    for change in feed["changes"]:
        kind, key, record = change["kind"], change["key"], change["record"]
        if kind == "user" and record is None:
            event.deleted_users.append(key)
        elif kind == "user":
            event.users.append(_user(record))
        elif kind == "token":
            event.tokens.append(ipb.TokenRecord(hash=key, token=_token(record)))
        elif kind == "visibility":
            event.visibility.append(ipb.VisibilityChange(path=key, **record))
    return event


def _token(t: dict) -> ipb.Token:
    return ipb.Token(id=t["id"], name=t["name"], principal=t["principal"],
                     created_ms=t.get("created", 0), expires_ms=t["expires"],
                     scopes=t["scopes"], revoked_ms=t.get("revoked", 0),
                     last_used_ms=t.get("last_used", 0))


class IdentityService(ipb_grpc.IdentityServicer):
    """Shares the Master service's plumbing (caller extraction, replication, reads)."""

    def __init__(self, master: MasterService):
        self.m = master

    @rpc
    async def WhoAmI(self, request, context):
        me = await self.m._read(context, lambda st, auth, now: st.whoami(auth, now),
                                linearizable=False)
        return ipb.WhoAmIResponse(user=me["user"], admin=me["admin"], account=me["account"],
                                  token=me["token"], scopes=me["scopes"],
                                  quota_bytes=me["quota"][0], quota_files=me["quota"][1],
                                  used_bytes=me["used"][0], used_files=me["used"][1])

    @rpc
    async def S3Credentials(self, request, context):
        """The S3 credentials of the caller's own token (never another's): holding the token
        is what entitles one to its secret (gfs/auth/s3keys.py)."""
        node = self.m.node
        if node.insecure_no_auth:
            raise FailedPrecondition("S3 credentials need a cluster with authentication "
                                     "(this one runs --insecure-no-auth)")
        auth = caller_of(context, False)
        if auth is None or len(auth) != HASH_BYTES:
            raise Unauthenticated("S3 credentials are for a signed-in token of one's own")
        me = await self.m._read(context, lambda st, a, now: st.whoami(a, now))
        if not me["user"]:
            raise Unauthenticated("S3 credentials are for a signed-in token of one's own")
        return ipb.S3CredentialsResponse(access_key_id=s3keys.access_key_id(auth),
                                         secret_access_key=s3keys.secret_for(node.s3_key, auth))

    @rpc
    async def UserAdd(self, request, context):
        ok = await self.m._mutate(request, context, {"op": "user_add", "name": request.name,
                                                     "admin": request.admin})
        return ipb.UserAddResponse(name=ok["name"], home=ok["home"])

    @rpc
    async def UserSet(self, request, context):
        command = {"op": "user_set", "name": request.name}
        if request.set_disabled:
            command["disabled"] = request.disabled
        if request.set_admin:
            command["admin"] = request.admin
        if request.set_quota:
            command["quota"] = [request.quota_bytes, request.quota_files]
        ok = await self.m._mutate(request, context, command)
        return ipb.User(name=ok["name"], admin=ok["admin"], disabled=ok["disabled"],
                        quota_bytes=ok["quota"][0], quota_files=ok["quota"][1], kind="user")

    @rpc
    async def UserList(self, request, context):
        users = await self.m._read(context, lambda st, auth, now: st.users(auth, now))
        return ipb.UserListResponse(users=[_user(u) for u in users])

    @rpc
    async def AccountCreate(self, request, context):
        ok = await self.m._mutate(request, context, {"op": "account_create",
                                                     "name": request.name, "owner": request.owner})
        return ipb.AccountResponse(name=ok["name"], owner=ok["owner"])

    @rpc
    async def AccountDelete(self, request, context):
        ok = await self.m._mutate(request, context, {"op": "account_delete", "name": request.name})
        return ipb.AccountResponse(name=ok["name"], revoked=ok["revoked"])

    @rpc
    async def TokenCreate(self, request, context):
        if not 0 <= request.ttl_s <= MAX_TTL_S:
            raise InvalidArgument(f"a token's lifetime must be between 0 (never expires) and "
                                  f"{MAX_TTL_S:.0f} s, not {request.ttl_s}")
        expires = now_ms() + int(request.ttl_s * 1000) if request.ttl_s else 0
        ok = await self.m._mutate(request, context, {
            "op": "token_create", "token_hash": request.token_hash, "name": request.name,
            "principal": request.principal, "expires": expires,
            "scopes": list(request.scopes) or ["*"]})
        return _token(ok)

    @rpc
    async def TokenList(self, request, context):
        tokens = await self.m._read(context, lambda st, auth, now: st.tokens(auth, now,
                                                                              request.all))
        return ipb.TokenListResponse(tokens=[_token(t) for t in tokens])

    @rpc
    async def TokenRevoke(self, request, context):
        ok = await self.m._mutate(request, context, {"op": "token_revoke", "token": request.token})
        return ipb.TokenRevokeResponse(revoked=ok["revoked"])

    @rpc
    async def SetVisibility(self, request, context):
        await self.m._mutate(request, context, {"op": "set_visibility", "path": request.path,
                                                "visibility": request.visibility})
        return pb.Empty()

    @rpc
    async def Chown(self, request, context):
        ok = await self.m._mutate(request, context, {"op": "chown", "path": request.path,
                                                     "owner": request.owner,
                                                     "recursive": request.recursive})
        return ipb.ChownResponse(changed=ok["changed"])

    @rpc
    async def Du(self, request, context):
        d = await self.m._read(context, lambda st, auth, now: st.du(request.path, auth, now))
        return ipb.DuResponse(path=d["path"], bytes=d["bytes"], files=d["files"], type=d["type"])

    @rpc
    async def Audit(self, request, context):
        limit = min(request.limit or 100, 10_000)
        records = await self.m._read(context, lambda st, auth, now: st.audit_log(auth, now, limit))
        return ipb.AuditResponse(records=[
            ipb.AuditRecord(at_ms=r["at"], who=r["who"], op=r["op"], target=r["target"],
                            result=r["result"]) for r in records])

    async def Watch(self, request, context):
        """Stream identity changes to an administrator's service (see proto/identity.proto).
        Only the leader serves it, so what it sends is never behind a newer leader; the stream
        ends when leadership or the caller's token is lost, and the watcher reconnects."""
        node = self.m.node
        try:
            auth = caller_of(context, node.insecure_no_auth)
            after, last_sent = request.from_revision, 0.0
            while True:
                node.require_leader()
                feed = await asyncio.to_thread(node.state_read, lambda st: (
                    node.require_admin(st, auth, now_ms()), st.auth_feed(after))[1])
                moved = "snapshot" in feed or feed["changes"]
                if moved or time.monotonic() - last_sent >= WATCH_HEARTBEAT_S:
                    yield _watch_event(feed)
                    last_sent = time.monotonic()
                after = feed["revision"]
                if not moved:
                    await asyncio.sleep(WATCH_POLL_S)
        except GfsError as err:
            await abort_with(context, err)
