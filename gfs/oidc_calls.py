"""The Client's OIDC calls (proto/oidc.proto), as a mixin of `Client`: trusted issuers and links
(administrators), and signing in with an ID token."""
from __future__ import annotations

from gfs.auth.tokens import new_token, token_hash
from gfs.identity_client import message_fields
from proto import master_pb2 as pb
from proto import oidc_pb2 as opb
from proto import oidc_pb2_grpc as opb_grpc


class OidcCalls:
    """Needs the Client's `_call(method, request, service=...)` and `_mutate(...)`."""

    def _ocall(self, method: str, request):
        return self._call(method, request, service=opb_grpc.OidcStub)

    def _omutate(self, method: str, request_cls, **fields):
        return self._mutate(method, request_cls, service=opb_grpc.OidcStub, **fields)

    def oidc_add(self, issuer: str, client_id: str, *, audiences: list[str] | None = None,
                 user_claim: str = "email", auto_create: bool = False,
                 allowed_domains: list[str] | None = None, token_ttl_s: float = 12 * 3600,
                 replace: bool = False) -> dict:
        """Trust an issuer (administrators); `replace` changes one already trusted."""
        spec = opb.Issuer(issuer=issuer, client_id=client_id, audiences=audiences or [],
                          user_claim=user_claim, auto_create=auto_create,
                          allowed_domains=allowed_domains or [], token_ttl_s=token_ttl_s)
        return message_fields(self._omutate("IssuerAdd", opb.IssuerAddRequest, issuer=spec,
                                           replace=replace))

    def oidc_remove(self, issuer: str) -> int:
        """Stop trusting an issuer; returns how many links went with it."""
        return self._omutate("IssuerRemove", opb.IssuerRemoveRequest, issuer=issuer).links

    def oidc_link(self, issuer: str, identity: str, user: str) -> dict:
        return message_fields(self._omutate("LinkAdd", opb.LinkRequest, issuer=issuer,
                                            identity=identity, user=user))

    def oidc_unlink(self, issuer: str, identity: str) -> None:
        self._omutate("LinkRemove", opb.LinkRequest, issuer=issuer, identity=identity)

    def oidc_config(self) -> dict:
        """{"issuers": [...], "links": [...]} (administrators)."""
        config = self._ocall("Config", pb.Empty())
        return {"issuers": [message_fields(i) for i in config.issuers],
                "links": [message_fields(link) for link in config.links]}

    def oidc_client_config(self, issuer: str) -> dict:
        """What a sign-in at `issuer` needs: client_id, scopes (anyone may ask)."""
        return message_fields(self._ocall("ClientConfig", opb.ClientConfigRequest(issuer=issuer)))

    def oidc_login(self, issuer: str, id_token: str, *, nonce: str = "", host: str = "",
                   ttl_s: float = 0) -> tuple[str, dict]:
        """Trade a verified ID token for a gfs token: (the token, who it is for). The token is
        made here and only its hash is sent, like `token_create`."""
        token = new_token()
        answer = self._omutate("Login", opb.LoginRequest, issuer=issuer, id_token=id_token,
                               nonce=nonce, token_hash=token_hash(token), host=host, ttl_s=ttl_s)
        return token, {"user": answer.user, "created": answer.created,
                       "identity": answer.identity, "token": message_fields(answer.token)}
