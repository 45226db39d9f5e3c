"""A small OpenID provider with the device authorization grant (RFC 8628), for testing
`gfs login --oidc --device` (oidc-provider-mock has no device endpoint).

The protocol is Authlib's server side: its Flask AuthorizationServer, DeviceAuthorizationEndpoint,
DeviceCodeGrant, and its OpenID Connect `OpenIDToken` extension, which signs the ID token. What is
written here is only the glue those classes ask for (storage in dicts, one key, one user) and the
page a person would use to approve a code, reduced to a form POST.

Run: python -m tests.integration.device_provider --port PORT --user-claims JSON
The first poll of each device code is answered `slow_down` (whether or not it is approved yet),
so clients are seen to back off.
"""
from __future__ import annotations

import json
import time

import click
import flask
from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin
from authlib.oauth2.rfc8628 import (DeviceAuthorizationEndpoint, DeviceCodeGrant,
                                    DeviceCredentialDict, SlowDownError)
from authlib.oidc.core import OpenIDToken
from joserfc.jwk import KeySet, RSAKey

ID_TOKEN_TTL_S = 300


class PublicClient(ClientMixin):
    """Any client id is a public client allowed the device grant."""

    def __init__(self, client_id: str):
        self.client_id = client_id

    def get_client_id(self):
        return self.client_id

    def check_endpoint_auth_method(self, method, endpoint):
        return method == "none"

    def check_grant_type(self, grant_type):
        return grant_type == DeviceCodeGrant.GRANT_TYPE

    def get_allowed_scope(self, scope):
        return scope


class User:
    def __init__(self, claims: dict):
        self.claims = claims

    def get_user_id(self):
        return self.claims["sub"]


def make_app(port: int, user_claims: dict) -> flask.Flask:
    issuer = f"http://127.0.0.1:{port}"
    key = RSAKey.generate_key(2048, parameters={"use": "sig", "alg": "RS256"})
    key.ensure_kid()
    credentials: dict[str, DeviceCredentialDict] = {}     # device_code -> credential
    grants: dict[str, tuple[User, bool]] = {}              # user_code -> (user, approved)
    polls: dict[str, int] = {}

    class Endpoint(DeviceAuthorizationEndpoint):
        INTERVAL = 1
        EXPIRES_IN = 120

        def get_verification_uri(self):
            return issuer + "/device/verify"

        def save_device_credential(self, client_id, scope, data):
            credentials[data["device_code"]] = DeviceCredentialDict(
                client_id=client_id, scope=scope, user_code=data["user_code"],
                expires_at=time.time() + data["expires_in"])

    class Grant(DeviceCodeGrant):
        def query_device_credential(self, device_code):
            return credentials.get(device_code)

        def query_user_grant(self, user_code):
            return grants.get(user_code)

        def validate_device_credential(self, credential):
            """The first poll of every code is told to slow down, approved or not yet."""
            polls[credential["user_code"]] = polls.get(credential["user_code"], 0) + 1
            if polls[credential["user_code"]] == 1:
                raise SlowDownError()
            return super().validate_device_credential(credential)

        def should_slow_down(self, credential):
            return False

    class IdToken(OpenIDToken):
        def get_jwt_config(self, grant, client=None):
            return {"key": key.as_dict(private=True), "alg": "RS256", "iss": issuer,
                    "exp": ID_TOKEN_TTL_S}

        def generate_user_info(self, user, scope):
            return dict(user.claims)

    app = flask.Flask(__name__)
    server = AuthorizationServer(app, query_client=PublicClient,
                                 save_token=lambda token, request: None)
    server.register_grant(Grant, [IdToken()])
    server.register_endpoint(Endpoint)

    @app.get("/.well-known/openid-configuration")
    def discovery():
        return flask.jsonify({
            "issuer": issuer, "token_endpoint": issuer + "/token",
            "device_authorization_endpoint": issuer + "/device",
            "jwks_uri": issuer + "/jwks", "id_token_signing_alg_values_supported": ["RS256"],
            "grant_types_supported": [DeviceCodeGrant.GRANT_TYPE],
            "response_types_supported": ["code"], "subject_types_supported": ["public"]})

    @app.get("/jwks")
    def jwks():
        return flask.jsonify(KeySet([key]).as_dict())

    @app.post("/device")
    def device_authorization():
        return server.create_endpoint_response(Endpoint.ENDPOINT_NAME)

    @app.post("/token")
    def token():
        return server.create_token_response()

    @app.post("/device/verify")
    def verify():
        """What the person does on their phone: approve (or deny) the code they were shown."""
        code = flask.request.form["user_code"]
        if not any(c["user_code"] == code for c in credentials.values()):
            return "unknown code", 404
        grants[code] = (User(user_claims), flask.request.form.get("action") != "deny")
        return "ok"

    return app


@click.command()
@click.option("--port", type=int, required=True)
@click.option("--user-claims", required=True, help="The one user's claims, JSON with 'sub'.")
def main(port: int, user_claims: str) -> None:
    import os
    os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"       # plain http on loopback
    make_app(port, json.loads(user_claims)).run(host="127.0.0.1", port=port, threaded=True)


if __name__ == "__main__":
    main()
