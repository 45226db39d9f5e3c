"""Verification of OpenID Connect ID tokens on the leader, before `oidc_login` is proposed.

An issuer's discovery document and signing keys (JWKS) are fetched over HTTP(S) (requests, in
a worker thread) with short timeouts and a size cap, cached for `cache_s`, and the keys fetched
again when a token names a key id the cache does not hold (an issuer rotating its keys) — at
most once per `refresh_gap_s`, so tokens with made-up key ids cannot make the masters hammer the
issuer.

The JOSE work (parsing, signature, claim checks) is joserfc's; this module decides what is
accepted: only the asymmetric algorithms the issuer publishes (never `none`, never an HMAC,
which would need a shared secret), the exact issuer, an audience this cluster accepts, `exp`
and `iat` within a small leeway, a subject, and the nonce the client sent.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import requests
from joserfc import jws, jwt
from joserfc.errors import (BadSignatureError, ClaimError, ExpiredTokenError, JoseError,
                            MissingClaimError)
from joserfc.jwk import KeySet

from gfs import clock
from gfs.errors import FailedPrecondition, InvalidArgument, Unauthenticated
from master.oidc import check_issuer_url

DISCOVERY_PATH = "/.well-known/openid-configuration"
ASYMMETRIC_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                             "ES256", "ES384", "ES512", "EdDSA"})
MAX_ID_TOKEN_CHARS = 16 * 1024
MAX_DOCUMENT_BYTES = 1 << 20


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass
class _Issuer:
    """What is cached of one issuer."""
    algorithms: list[str] = field(default_factory=list)
    jwks_uri: str = ""
    keys: KeySet | None = None
    fetched: float = 0.0            # monotonic time of the last discovery + JWKS fetch
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True)
class Verified:
    """What the state machine needs of a verified ID token."""
    audience: str
    claims: dict                    # sub, and email, email_verified, preferred_username if given
    expires_ms: int
    token_hash: bytes               # sha256 of the ID token (a replay is refused)


class IdTokenVerifier:
    """One per master; used from its asyncio event loop."""

    def __init__(self, *, timeout_s: float = 5.0, cache_s: float = 3600.0,
                 refresh_gap_s: float = 30.0, leeway_s: int = 60):
        self.timeout_s = timeout_s
        self.cache_s = cache_s
        self.refresh_gap_s = refresh_gap_s
        self.leeway_s = leeway_s
        self._issuers: dict[str, _Issuer] = {}

    # --- fetching ---------------------------------------------------------------------------

    async def _get_json(self, url: str, what: str) -> dict:
        """GET a JSON object (in a worker thread: the event loop keeps serving)."""
        return await asyncio.to_thread(self._fetch_json, url, what)

    def _fetch_json(self, url: str, what: str) -> dict:
        try:
            with requests.get(url, timeout=self.timeout_s, allow_redirects=False, stream=True,
                              headers={"accept": "application/json"}) as r:
                if r.status_code != 200:
                    raise FailedPrecondition(f"cannot fetch the {what} {url}: HTTP {r.status_code}")
                body = b""
                for piece in r.iter_content(64 * 1024):
                    body += piece
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise FailedPrecondition(f"the {what} {url} is larger than "
                                          f"{MAX_DOCUMENT_BYTES} bytes")
        except requests.RequestException as err:
            raise FailedPrecondition(f"cannot fetch the {what} {url}: "
                                     f"{type(err).__name__}") from None
        try:
            document = json.loads(body)
        except ValueError:
            raise FailedPrecondition(f"the {what} {url} is not JSON") from None
        if not isinstance(document, dict):
            raise FailedPrecondition(f"the {what} {url} is not a JSON object")
        return document

    async def _refresh(self, issuer: str, cached: _Issuer) -> None:
        """Fetch the discovery document and the keys it points to."""
        discovery = await self._get_json(issuer.rstrip("/") + DISCOVERY_PATH,
                                         "discovery document")
        if discovery.get("issuer") != issuer:
            raise FailedPrecondition(f"the discovery document of {issuer} names another issuer: "
                              f"{discovery.get('issuer')!r}")
        jwks_uri = discovery.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise FailedPrecondition(f"the discovery document of {issuer} has no jwks_uri")
        try:
            check_issuer_url(jwks_uri.split("?")[0])
        except InvalidArgument:
            raise FailedPrecondition(f"{issuer} publishes its keys at {jwks_uri}, which is not "
                                     "https")
        published = discovery.get("id_token_signing_alg_values_supported") or ["RS256"]
        document = await self._get_json(jwks_uri, "key set")
        try:
            keys = KeySet.import_key_set(document)
        except (JoseError, KeyError, TypeError, ValueError) as err:
            raise FailedPrecondition(f"the key set {jwks_uri} of {issuer} cannot be used: "
                                     f"{err}") from None
        cached.algorithms = [a for a in published if a in ASYMMETRIC_ALGS]
        cached.jwks_uri, cached.keys, cached.fetched = jwks_uri, keys, time.monotonic()

    async def _issuer(self, issuer: str, kid: str | None) -> _Issuer:
        """The cached issuer, fetched again when stale or when `kid` is a key it lacks."""
        cached = self._issuers.setdefault(issuer, _Issuer())
        async with cached.lock:
            age = time.monotonic() - cached.fetched
            stale = cached.keys is None or age > self.cache_s
            unknown = cached.keys is not None and kid is not None and not any(
                key.kid == kid for key in cached.keys)
            if stale or (unknown and age > self.refresh_gap_s):
                await self._refresh(issuer, cached)
        return cached

    # --- verifying --------------------------------------------------------------------------

    async def verify(self, record: dict, id_token: str, nonce: str) -> Verified:
        """Verify `id_token` for the issuer `record` (master/oidc.py); Unauthenticated with
        the reason when it does not verify, FailedPrecondition when the issuer's documents
        cannot be fetched or used (not Unavailable: clients retry that, meaning the masters)."""
        issuer = record["issuer"]
        if len(id_token) > MAX_ID_TOKEN_CHARS:
            raise InvalidArgument(f"an ID token is at most {MAX_ID_TOKEN_CHARS} characters")
        try:
            header = jws.extract_compact(id_token.encode()).headers()
        except (JoseError, ValueError, UnicodeError):
            raise Unauthenticated("the ID token is not a signed JWT (compact JWS)") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg == "none" or not isinstance(alg, str):
            raise Unauthenticated("the ID token is not signed (alg 'none')")
        cached = await self._issuer(issuer, kid if isinstance(kid, str) else None)
        if alg not in cached.algorithms:
            raise Unauthenticated(f"the ID token is signed with {alg}; accepted are the "
                                  f"asymmetric algorithms {issuer} publishes for ID tokens: "
                                  f"{', '.join(cached.algorithms) or 'none'}")
        try:
            key = cached.keys.get_by_kid(kid)
        except JoseError:
            raise Unauthenticated(f"the ID token is signed with a key ({kid!r}) that {issuer} "
                                  f"does not publish at {cached.jwks_uri}") from None
        try:
            claims = jwt.decode(id_token, key, algorithms=[alg]).claims
        except BadSignatureError:
            raise Unauthenticated(f"the ID token's signature does not verify with {issuer}'s "
                                  f"key {kid!r}") from None
        except (JoseError, ValueError) as err:
            raise Unauthenticated(f"the ID token cannot be verified: {err}") from None
        return Verified(self._audience(record, claims), self._check_claims(issuer, claims, nonce),
                        int(claims["exp"] * 1000), hashlib.sha256(id_token.encode()).digest())

    def _check_claims(self, issuer: str, claims: dict, nonce: str) -> dict:
        now = int(clock.now())          # the daemon's steady clock (gfs/clock.py)
        registry = jwt.JWTClaimsRegistry(
            now=now, leeway=self.leeway_s, iss={"essential": True, "value": issuer},
            sub={"essential": True}, exp={"essential": True}, iat={"essential": True})
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise Unauthenticated(f"the ID token expired {_utc(claims['exp'])} (now "
                                  f"{_utc(now)}, leeway {self.leeway_s} s)") from None
        except MissingClaimError as err:
            raise Unauthenticated(f"the ID token lacks a required claim: "
                                  f"{err.description}") from None
        except ClaimError as err:
            if err.claim == "iss":
                raise Unauthenticated(f"the ID token's issuer {claims.get('iss')!r} is not "
                                      f"{issuer}") from None
            raise Unauthenticated(f"the ID token's {err.claim!r} claim is not valid: "
                                  f"{err.description}") from None
        if nonce and claims.get("nonce") != nonce:
            raise Unauthenticated("the ID token's nonce is not the one this sign-in sent "
                                  "(a replayed or mixed-up response)")
        if not nonce and "nonce" in claims:
            raise Unauthenticated("the ID token carries a nonce but the sign-in sent none")
        out = {"sub": claims["sub"]}
        for name, kind in (("email", str), ("email_verified", bool),
                           ("preferred_username", str)):
            if isinstance(claims.get(name), kind):
                out[name] = claims[name]
        return out

    @staticmethod
    def _audience(record: dict, claims: dict) -> str:
        """The audience of the token this cluster accepts (OIDC Core 3.1.3.7: one of `aud`;
        with several audiences, the authorized party `azp` must be this cluster too)."""
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        accepted = [a for a in audiences if a in record["audiences"]]
        if not accepted:
            shown = ", ".join(repr(a) for a in audiences) or "none"
            raise Unauthenticated(f"ID token audience {shown} is not this cluster's client id "
                                  f"{record['client_id']!r}")
        azp = claims.get("azp")
        if len(audiences) > 1 and azp is not None and azp not in record["audiences"]:
            raise Unauthenticated(f"the ID token was issued to another party ({azp!r})")
        return accepted[0]
