"""Getting an ID token from an OpenID Connect issuer on the command line (`gfs login --oidc`).

Two flows, both with Authlib's OAuth 2.0 client (the protocol is the library's):

- **authorization code with PKCE** (RFC 7636, RFC 8252 for native apps): a one-shot HTTP
  listener on 127.0.0.1 at a random port receives the redirect; the URL to open is printed and,
  if possible, opened in a browser; `state` and `nonce` are fresh random values, the code
  verifier never leaves this process.
- **device authorization** (RFC 8628) for machines without a browser: the user opens a URL on
  another device and types a code; this process polls the token endpoint at the interval the
  issuer asks for (slower when told `slow_down`).

The ID token is not checked here: the masters verify it (master/oidc_verify.py).
"""
from __future__ import annotations

import http.server
import threading
import time
import webbrowser
from dataclasses import dataclass
from typing import Callable
from urllib.parse import parse_qs, urlsplit

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc8628 import DEVICE_CODE_GRANT_TYPE

from gfs.errors import (DeadlineExceeded, FailedPrecondition, GfsError, Unauthenticated,
                        Unavailable)

DISCOVERY_PATH = "/.well-known/openid-configuration"
HTTP_TIMEOUT_S = 10.0
CALLBACK_PATH = "/callback"
DONE_PAGE = (b"<!doctype html><title>gfs</title><p>%s</p>"
             b"<p>You can close this window and return to the terminal.</p>")

Say = Callable[[str], None]


@dataclass(frozen=True)
class IdToken:
    id_token: str
    nonce: str                       # "" when the flow sent none (the device flow)


def discover(issuer: str) -> dict:
    """The issuer's discovery document (its `issuer` must be the one asked for)."""
    url = issuer.rstrip("/") + DISCOVERY_PATH
    try:
        response = requests.get(url, timeout=HTTP_TIMEOUT_S, allow_redirects=False)
        response.raise_for_status()
        document = response.json()
    except requests.RequestException as err:
        raise Unavailable(f"cannot fetch {url}: {err}") from None
    except ValueError:
        raise Unavailable(f"{url} is not JSON") from None
    if not isinstance(document, dict):
        raise FailedPrecondition(f"{url} is not a JSON object")
    if document.get("issuer") != issuer:
        raise FailedPrecondition(f"{url} describes another issuer ({document.get('issuer')})")
    return document


def _id_token_of(token: dict, issuer: str) -> str:
    id_token = token.get("id_token")
    if not isinstance(id_token, str) or not id_token:
        raise Unauthenticated(f"{issuer} answered without an ID token (is 'openid' among the "
                              "scopes the client may ask for?)")
    return id_token


class _Redirect:
    """A one-shot listener on 127.0.0.1:random port for the authorization response."""

    def __init__(self):
        received: list[str] = []
        arrived = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):                              # noqa: N802 (the stdlib's name)
                if urlsplit(self.path).path != CALLBACK_PATH:
                    self.send_error(404)
                    return
                query = parse_qs(urlsplit(self.path).query)
                ok = "code" in query
                self.send_response(200 if ok else 400)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.end_headers()
                self.wfile.write(DONE_PAGE % (b"Signed in." if ok else b"Sign-in failed."))
                if not arrived.is_set():
                    received.append(f"http://127.0.0.1:{self.server.server_port}{self.path}")
                    arrived.set()

            def log_message(self, *args):                 # no access log on the terminal
                pass

        self._server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self._received, self._arrived = received, arrived
        self.uri = f"http://127.0.0.1:{self._server.server_port}{CALLBACK_PATH}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def wait(self, timeout_s: float) -> str:
        if not self._arrived.wait(timeout_s):
            raise DeadlineExceeded(f"no sign-in came back within {timeout_s:.0f} s")
        return self._received[0]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _session(client_id: str, client_secret: str, scopes: list[str], **kwargs) -> OAuth2Session:
    """A public client (no client authentication) unless the issuer gave the CLI a secret."""
    return OAuth2Session(client_id, client_secret or None, scope=" ".join(scopes),
                         token_endpoint_auth_method=("client_secret_basic" if client_secret
                                                     else "none"),
                         default_timeout=HTTP_TIMEOUT_S, **kwargs)


def authorization_code(issuer: str, client_id: str, scopes: list[str], *, say: Say,
                       client_secret: str = "", open_browser: bool = True,
                       timeout_s: float = 300.0) -> IdToken:
    """Sign in through a browser: authorization code + PKCE on a loopback redirect."""
    document = discover(issuer)
    redirect = _Redirect()
    try:
        with _session(client_id, client_secret, scopes, redirect_uri=redirect.uri,
                      code_challenge_method="S256") as oauth:
            verifier, nonce = generate_token(64), generate_token(32)
            url, state = oauth.create_authorization_url(
                document["authorization_endpoint"], code_verifier=verifier, nonce=nonce)
            say(f"Sign in at {issuer} by opening this URL (waiting {timeout_s:.0f} s):\n{url}")
            if open_browser:
                try:
                    webbrowser.open(url)
                except webbrowser.Error:
                    pass
            response = redirect.wait(timeout_s)
            query = parse_qs(urlsplit(response).query)
            if "error" in query:
                why = query.get("error_description", query["error"])[0]
                raise Unauthenticated(f"{issuer} refused the sign-in: {query['error'][0]}: {why}")
            if "code" not in query:
                raise Unauthenticated("the sign-in came back without an authorization code")
            token = oauth.fetch_token(document["token_endpoint"], authorization_response=response,
                                      state=state, code_verifier=verifier)
            return IdToken(_id_token_of(token, issuer), nonce)
    except AuthlibBaseError as err:
        raise Unauthenticated(f"{issuer} sign-in failed: {err.error}: {err.description}") from None
    except requests.RequestException as err:
        raise Unavailable(f"cannot reach {issuer}: {err}") from None
    except KeyError as err:
        raise FailedPrecondition(f"{issuer}'s discovery document lacks {err}") from None
    except ValueError as err:                      # e.g. a token response that is not JSON
        raise FailedPrecondition(f"{issuer}'s answer is not usable: {err}") from None
    finally:
        redirect.close()


def device(issuer: str, client_id: str, scopes: list[str], *, say: Say,
           client_secret: str = "", timeout_s: float = 300.0,
           sleep: Callable[[float], None] = time.sleep) -> IdToken:
    """Sign in from a machine without a browser: the device authorization grant."""
    document = discover(issuer)
    endpoint = document.get("device_authorization_endpoint")
    if not endpoint:
        raise FailedPrecondition(f"{issuer} offers no device sign-in (its discovery document "
                                 "has no device_authorization_endpoint); sign in with a browser")
    try:
        with _session(client_id, client_secret, scopes) as oauth:
            started = oauth.post(endpoint, data={"client_id": client_id,
                                                 "scope": " ".join(scopes)},
                                 withhold_token=True)
            grant = started.json()
            if started.status_code != 200 or "device_code" not in grant:
                raise Unauthenticated(f"{issuer} refused to start a device sign-in: "
                                      f"{grant.get('error', started.status_code)}: "
                                      f"{grant.get('error_description', '')}")
            where = grant.get("verification_uri_complete") or grant["verification_uri"]
            say(f"To sign in, open {where} on any device and enter the code "
                f"{grant['user_code']}")
            interval = float(grant.get("interval", 5))
            limit = min(timeout_s, float(grant.get("expires_in", timeout_s)))
            deadline = time.monotonic() + limit
            while time.monotonic() < deadline:
                sleep(interval)
                try:
                    token = oauth.fetch_token(document["token_endpoint"],
                                              grant_type=DEVICE_CODE_GRANT_TYPE,
                                              device_code=grant["device_code"],
                                              client_id=client_id)
                    return IdToken(_id_token_of(token, issuer), "")
                except AuthlibBaseError as err:
                    if err.error == "authorization_pending":
                        continue
                    if err.error == "slow_down":
                        interval += 5
                        continue
                    raise
            raise DeadlineExceeded(f"the device sign-in was not completed within {limit:.0f} s")
    except GfsError:
        raise
    except AuthlibBaseError as err:
        raise Unauthenticated(f"{issuer} sign-in failed: {err.error}: {err.description}") from None
    except requests.RequestException as err:
        raise Unavailable(f"cannot reach {issuer}: {err}") from None
    except (KeyError, ValueError) as err:
        raise FailedPrecondition(f"{issuer}'s device sign-in answer is not usable: {err}") from None
