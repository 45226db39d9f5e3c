"""The Client's identity and access calls (proto/identity.proto), as a mixin of `Client`:
who am I, users, service accounts, tokens, visibility, ownership, usage and the audit log."""
from __future__ import annotations

from gfs.auth.tokens import new_token, token_hash
from proto import identity_pb2 as ipb
from proto import identity_pb2_grpc as ipb_grpc
from proto import master_pb2 as pb


def message_fields(message) -> dict:
    """A flat proto message as a dict (repeated fields as lists)."""
    return {f.name: (list(v) if f.is_repeated else v)
            for f in message.DESCRIPTOR.fields for v in [getattr(message, f.name)]}


class IdentityCalls:
    """Needs the Client's `_call(method, request, service=...)` and `_mutate(...)`."""

    def _icall(self, method: str, request):
        return self._call(method, request, service=ipb_grpc.IdentityStub)

    def _imutate(self, method: str, request_cls, **fields):
        return self._mutate(method, request_cls, service=ipb_grpc.IdentityStub, **fields)

    def whoami(self) -> dict:
        """user ("" = anonymous), admin, account, token, scopes, quota_* and used_*."""
        return message_fields(self._icall("WhoAmI", pb.Empty()))

    def s3_credentials(self) -> dict:
        """The S3 access key id and secret of this client's own token (docs/s3.md)."""
        return message_fields(self._icall("S3Credentials", pb.Empty()))

    def user_add(self, name: str, admin: bool = False) -> dict:
        """Add a user (administrators); returns its name and home directory."""
        return message_fields(self._imutate("UserAdd", ipb.UserAddRequest, name=name, admin=admin))

    def user_set(self, name: str, *, disabled: bool | None = None, admin: bool | None = None,
                 quota: tuple[int, int] | None = None) -> dict:
        """Disable/enable a user, make one an administrator, or set a quota ([bytes, files],
        0 = no limit); only what is given changes."""
        fields = {"name": name}
        if disabled is not None:
            fields.update(set_disabled=True, disabled=disabled)
        if admin is not None:
            fields.update(set_admin=True, admin=admin)
        if quota is not None:
            fields.update(set_quota=True, quota_bytes=quota[0], quota_files=quota[1])
        return message_fields(self._imutate("UserSet", ipb.UserSetRequest, **fields))

    def users(self) -> list[dict]:
        return [message_fields(u) for u in self._icall("UserList", pb.Empty()).users]

    def account_create(self, name: str, owner: str = "") -> dict:
        return message_fields(self._imutate("AccountCreate", ipb.AccountRequest, name=name, owner=owner))

    def account_delete(self, name: str) -> dict:
        """Delete a service account; its tokens are revoked."""
        return message_fields(self._imutate("AccountDelete", ipb.AccountRequest, name=name))

    def token_create(self, name: str, *, scopes: list[str] | None = None, ttl_s: float = 0,
                     principal: str = "") -> tuple[str, dict]:
        """Make a token (for the caller, or a service account of theirs): (the token, its
        record). The token is made here and only its hash is sent: it is shown once."""
        token = new_token()
        info = self._imutate("TokenCreate", ipb.TokenCreateRequest, token_hash=token_hash(token),
                             name=name, principal=principal, ttl_s=ttl_s, scopes=scopes or [])
        return token, message_fields(info)

    def tokens(self, all_users: bool = False) -> list[dict]:
        return [message_fields(t) for t in self._icall("TokenList", ipb.TokenListRequest(all=all_users)).tokens]

    def token_revoke(self, token: str) -> list[str]:
        """Revoke by id, id prefix (6+ hex digits) or name; returns the revoked ids."""
        return list(self._imutate("TokenRevoke", ipb.TokenRevokeRequest, token=token).revoked)

    def set_visibility(self, path: str, visibility: str) -> None:
        """private, visible, public, or "" to inherit from the directory above again."""
        self._imutate("SetVisibility", ipb.VisibilityRequest, path=path, visibility=visibility)

    def chown(self, path: str, owner: str, recursive: bool = False) -> int:
        return self._imutate("Chown", ipb.ChownRequest, path=path, owner=owner,
                             recursive=recursive).changed

    def du(self, path: str) -> dict:
        """bytes and files of the committed files at or below `path`."""
        return message_fields(self._icall("Du", ipb.DuRequest(path=path)))

    def audit(self, limit: int = 100) -> list[dict]:
        return [message_fields(r) for r in self._icall("Audit", ipb.AuditRequest(limit=limit)).records]
