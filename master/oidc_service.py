"""The Oidc gRPC service (proto/oidc.proto): trusted issuers and links (administrators), and
signing in with an ID token, verified on the leader before `oidc_login` is proposed."""
from __future__ import annotations

import logging
import re

from gfs.auth.tokens import HASH_BYTES
from gfs.errors import InvalidArgument, NotFound, Unauthenticated
from gfs.window_budget import WindowBudget
from master.service import MasterService, header_fields, request_timeout, rpc
from proto import identity_pb2 as ipb
from proto import master_pb2 as pb
from proto import oidc_pb2 as opb
from proto import oidc_pb2_grpc as opb_grpc

log = logging.getLogger(__name__)

MAX_TTL_S = 366 * 86400.0
SCOPES = ("openid", "email", "profile")
MAX_AUDIT_TEXT = 255             # a command's text fields (master/schema.py)


def _issuer(r: dict) -> opb.Issuer:
    return opb.Issuer(issuer=r["issuer"], client_id=r["client_id"], audiences=r["audiences"],
                      user_claim=r["user_claim"], auto_create=r["auto_create"],
                      allowed_domains=r["allowed_domains"], token_ttl_s=r["token_ttl"] / 1000,
                      created_ms=r["created"], created_by=r["by"])


def token_name_for(host: str) -> str:
    """The name of the gfs token a sign-in from `host` gets: oidc-HOST."""
    cleaned = re.sub(r"[^a-z0-9.-]+", "-", host.lower()).strip("-.")[:64]
    return f"oidc-{cleaned or 'unknown-host'}"


def _clip(text: str) -> str:
    data = text.encode()
    return text if len(data) <= MAX_AUDIT_TEXT else data[:MAX_AUDIT_TEXT - 3].decode(
        errors="ignore") + "..."


class OidcService(opb_grpc.OidcServicer):
    """Shares the Master service's plumbing (caller extraction, replication, reads)."""

    def __init__(self, master: MasterService):
        self.m = master
        self._verifier = None
        # Refused sign-ins written to the audit log (each is a log entry): anyone can send
        # bad ID tokens, and they must not flood the log and push real records out. Refusals
        # beyond it are still refused and logged locally.
        self.budget = WindowBudget(per_window=20, window_s=10.0)

    @property
    def verifier(self):
        """The ID token verifier, made at the first sign-in (joserfc and requests are imported
        then, not at every master's start)."""
        if self._verifier is None:
            from master.oidc_verify import IdTokenVerifier
            self._verifier = IdTokenVerifier()
        return self._verifier

    @rpc
    async def IssuerAdd(self, request, context):
        i = request.issuer
        if not 1 <= i.token_ttl_s <= MAX_TTL_S:
            raise InvalidArgument(f"the token lifetime must be between 1 s and {MAX_TTL_S:.0f} s, "
                                  f"not {i.token_ttl_s}")
        ok = await self.m._mutate(request, context, {
            "op": "oidc_add", "issuer": i.issuer, "client": i.client_id,
            "audiences": list(i.audiences), "user_claim": i.user_claim or "email",
            "auto_create": i.auto_create, "allowed_domains": list(i.allowed_domains),
            "token_ttl": int(i.token_ttl_s * 1000), "replace": request.replace})
        return _issuer(ok)

    @rpc
    async def IssuerRemove(self, request, context):
        ok = await self.m._mutate(request, context, {"op": "oidc_rm", "issuer": request.issuer})
        return opb.IssuerRemoveResponse(links=ok["links"])

    @rpc
    async def LinkAdd(self, request, context):
        ok = await self.m._mutate(request, context, {"op": "oidc_link", "issuer": request.issuer,
                                                     "identity": request.identity,
                                                     "user": request.user})
        return opb.Link(issuer=ok["issuer"], identity=ok["identity"], user=ok["user"], how="admin")

    @rpc
    async def LinkRemove(self, request, context):
        await self.m._mutate(request, context, {"op": "oidc_unlink", "issuer": request.issuer,
                                                "identity": request.identity})
        return pb.Empty()

    @rpc
    async def Config(self, request, context):
        config = await self.m._read(context, lambda st, auth, now: st.oidc_config(auth, now))
        return opb.ConfigResponse(
            issuers=[_issuer(r) for r in config["issuers"]],
            links=[opb.Link(issuer=r["issuer"], identity=r["identity"], user=r["user"],
                            created_ms=r["created"], how=r["how"]) for r in config["links"]])

    @rpc
    async def ClientConfig(self, request, context):
        record = await self._issuer_record(request.issuer, context)
        if record is None:
            raise NotFound(f"issuer {request.issuer} is not configured on this cluster "
                           "(an administrator adds it: gfs oidc add)")
        return opb.ClientConfigResponse(issuer=record["issuer"], client_id=record["client_id"],
                                        scopes=SCOPES, token_ttl_s=record["token_ttl"] / 1000)

    async def _issuer_record(self, url: str, context) -> dict | None:
        node = self.m.node
        return await node.read(lambda st: st.oidc_issuer(url), False, request_timeout(context))

    @rpc
    async def Login(self, request, context):
        """Verify the ID token here, on the leader (the network and this clock are only here),
        then let the log decide the rest (master/oidc.py `login`)."""
        node = self.m.node
        node.require_leader()
        if not 0 <= request.ttl_s <= MAX_TTL_S:
            raise InvalidArgument(f"a token's lifetime must be between 0 (the issuer's) and "
                                  f"{MAX_TTL_S:.0f} s, not {request.ttl_s}")
        if len(request.token_hash) != HASH_BYTES:
            raise InvalidArgument(f"token_hash must be the {HASH_BYTES}-byte SHA-256 of the gfs "
                                  "token the client made")
        record = await self._issuer_record(request.issuer, context)
        try:
            if record is None:
                raise Unauthenticated(f"issuer {request.issuer} is not configured on this "
                                      "cluster")
            verified = await self.verifier.verify(record, request.id_token, request.nonce)
        except Unauthenticated as refusal:
            await self._audit_refusal(request, refusal, context)
            raise
        command = {"op": "oidc_login", "issuer": request.issuer, "audience": verified.audience,
                   "claims": verified.claims, "id_token_hash": verified.token_hash,
                   "id_token_expires": verified.expires_ms, "token_hash": request.token_hash,
                   "token_name": token_name_for(request.host), "ttl": int(request.ttl_s * 1000),
                   "auth": None, **header_fields(request.header)}
        ok = await node.execute(command, request_timeout(context))
        t = ok["token"]
        return opb.LoginResponse(user=ok["user"], created=ok["created"], identity=ok["identity"],
                                 token=ipb.Token(id=t["id"], name=t["name"],
                                                 principal=t["principal"], created_ms=t["created"],
                                                 expires_ms=t["expires"], scopes=t["scopes"]))

    async def _audit_refusal(self, request, refusal: Unauthenticated, context) -> None:
        """Put a refusal made here in the replicated audit log (within the budget)."""
        if not self.budget.take():
            log.warning("OIDC sign-in refused (not audited: over budget, %d dropped): %s",
                        self.budget.dropped, refusal.message)
            return
        command = {"op": "oidc_refused", "identity": _clip(request.issuer or "(no issuer)"),
                   "reason": _clip(refusal.message), "auth": None}
        try:
            await self.m.node.execute(command, request_timeout(context))
        except Unauthenticated:
            pass                    # what the command is for: the refusal is now audited
