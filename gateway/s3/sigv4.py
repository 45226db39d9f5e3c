"""AWS Signature Version 4 verification (hmac/hashlib only), for the S3 API.

A request carries its signature either in the `Authorization` header or in a presigned query
string (`X-Amz-Signature` and friends). Verifying is in two steps, so the caller can look the
access key up in between: `parse_auth` reads what the request claims (access key, scope, date,
signed headers, signature) without any secret; `verify` recomputes the signature with the
secret and checks the time (the request's date within 15 minutes of ours, as S3; a presigned
URL before its expiry). The result carries the signing key and the seed signature that the
aws-chunked decoder (chunked.py) needs to verify each chunk's signature.
"""
from __future__ import annotations

import calendar
import functools
import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, unquote_to_bytes

from gateway.s3.errors import S3Error, access_denied, bad_auth, signature_mismatch

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW_S = 15 * 60
MAX_PRESIGN_S = 7 * 24 * 3600
UNSIGNED = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_DATE = re.compile(r"[0-9]{8}T[0-9]{6}Z")     # X-Amz-Date, ASCII digits only (fullmatch)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SPACES = re.compile(r"\s+")
_AUTH_PART = re.compile(r"\s*(Credential|SignedHeaders|Signature)\s*=\s*([^,\s]*)\s*")


def parse_query(raw: str) -> list[tuple[str, str]]:
    """The decoded (name, value) pairs of a raw query string, in order ('a' alone is ('a', ''));
    S3InvalidArgument for bytes that are not UTF-8 once decoded."""
    pairs = []
    for part in raw.split("&") if raw else []:
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((_decode(name), _decode(value)))
    return pairs


def _decode(text: str) -> str:
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise S3Error("InvalidArgument", "the request has percent-encoded bytes that are not "
                      "UTF-8") from None


def uri_encode(text: str, keep_slash: bool = False) -> str:
    """AWS's encoding: every byte but A-Z a-z 0-9 - _ . ~ (and / in a path) as %XX."""
    return quote(text, safe="/-_.~" if keep_slash else "-_.~")


@dataclass(frozen=True)
class Claim:
    """What a signed request says about itself (nothing checked yet)."""
    access_key: str
    date: str                      # the credential scope's YYYYMMDD
    region: str
    service: str
    amz_date: str                  # YYYYMMDDTHHMMSSZ
    signed_headers: tuple[str, ...]
    signature: str
    payload_hash: str              # the x-amz-content-sha256 value (UNSIGNED-PAYLOAD presigned)
    presigned: bool = False
    expires_s: int = 0             # presigned: X-Amz-Expires

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


@dataclass(frozen=True)
class Verified:
    claim: Claim
    signing_key: bytes

    @property
    def seed_signature(self) -> str:
        return self.claim.signature


def _credential(text: str) -> tuple[str, str, str, str]:
    parts = text.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not parts[0]:
        raise bad_auth("the Credential must be ACCESS_KEY/YYYYMMDD/REGION/SERVICE/aws4_request")
    if parts[3] != "s3":
        raise bad_auth(f"the credential's service must be 's3', not {parts[3]!r}")
    if not re.fullmatch(r"\d{8}", parts[1]):
        raise bad_auth("the credential's date must be YYYYMMDD")
    return parts[0], parts[1], parts[2], parts[3]


def _signed_headers(text: str) -> tuple[str, ...]:
    names = tuple(text.split(";")) if text else ()
    if not names or any(not n or n != n.lower() for n in names) or list(names) != sorted(names):
        raise bad_auth("SignedHeaders must be lower-case header names, sorted, joined by ';'")
    if "host" not in names:
        raise bad_auth("SignedHeaders must include host")
    return names


def parse_auth(headers: list[tuple[str, str]], query: list[tuple[str, str]]) -> Claim | None:
    """The request's signature claim; None for an anonymous request (no Authorization header and
    no X-Amz-Signature); S3Error for a malformed one or another signing scheme."""
    header = header_value(headers, "authorization")
    params = dict(query)
    if header is not None:
        if "X-Amz-Signature" in params:
            raise invalid("only one authentication mechanism is allowed: header or query")
        algorithm, _, rest = header.strip().partition(" ")
        if algorithm != ALGORITHM:
            raise invalid(f"unsupported authorization type {algorithm[:40]!r}: use "
                          f"{ALGORITHM} (Signature Version 4)")
        fields: dict[str, str] = {}
        for part in rest.split(","):
            m = _AUTH_PART.fullmatch(part)
            if not m:
                raise bad_auth("the Authorization header is malformed")
            fields[m.group(1)] = m.group(2)
        if set(fields) != {"Credential", "SignedHeaders", "Signature"}:
            raise bad_auth("the Authorization header needs Credential, SignedHeaders, Signature")
        amz_date = header_value(headers, "x-amz-date") or ""
        payload = header_value(headers, "x-amz-content-sha256")
        if payload is None:
            raise invalid("missing x-amz-content-sha256 (Signature Version 4 needs it)")
        return _claim(fields["Credential"], fields["SignedHeaders"], fields["Signature"],
                      amz_date, payload.strip(), False, 0)
    if "X-Amz-Signature" not in params and "X-Amz-Credential" not in params:
        if "AWSAccessKeyId" in params or "Signature" in params:
            raise invalid("Signature Version 2 is not supported: presign with Signature "
                          "Version 4 (boto3: Config(signature_version='s3v4'))")
        return None
    if params.get("X-Amz-Algorithm") != ALGORITHM:
        raise invalid(f"X-Amz-Algorithm must be {ALGORITHM}")
    for name in ("X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders",
                 "X-Amz-Signature"):
        if name not in params:
            raise access_denied(f"query-string authentication requires {name}")
    expires = params["X-Amz-Expires"]
    if not expires.isdigit() or not 0 < int(expires) <= MAX_PRESIGN_S:
        raise access_denied("X-Amz-Expires must be 1 to 604800 seconds")
    return _claim(params["X-Amz-Credential"], params["X-Amz-SignedHeaders"],
                  params["X-Amz-Signature"], params["X-Amz-Date"],
                  params.get("X-Amz-Content-Sha256", UNSIGNED), True, int(expires))


def invalid(message: str) -> S3Error:
    return S3Error("InvalidRequest", message, 400)


def _claim(credential: str, signed: str, signature: str, amz_date: str, payload: str,
           presigned: bool, expires: int) -> Claim:
    access_key, date, region, service = _credential(credential)
    if not _DATE.fullmatch(amz_date):
        raise access_denied("the request needs a valid X-Amz-Date (YYYYMMDDTHHMMSSZ)")
    if amz_date[:8] != date:
        raise bad_auth(f"the credential's date {date} is not the request's ({amz_date[:8]})")
    if not _HEX64.match(signature):
        raise signature_mismatch()
    if payload not in (UNSIGNED, STREAMING_SIGNED, STREAMING_UNSIGNED_TRAILER) \
            and not _HEX64.match(payload):
        raise invalid(f"x-amz-content-sha256 {payload[:70]!r} is not a SHA-256 or a known "
                      f"payload mode")
    return Claim(access_key, date, region, service, amz_date, _signed_headers(signed),
                 signature, payload, presigned, expires)


def header_value(headers: list[tuple[str, str]], name: str) -> str | None:
    """The first value of header `name` (lower-case) in `headers`."""
    for key, value in headers:
        if key == name:
            return value
    return None


def canonical_request(method: str, raw_path: str, query: list[tuple[str, str]],
                      headers: list[tuple[str, str]], claim: Claim, host: str) -> str:
    """The canonical request of SigV4 (S3 flavour: the path is encoded once, not normalized)."""
    path = uri_encode(_decode(raw_path), keep_slash=True) or "/"
    pairs = sorted((uri_encode(k), uri_encode(v)) for k, v in query
                   if not (claim.presigned and k == "X-Amz-Signature"))
    canon_query = "&".join(f"{k}={v}" for k, v in pairs)
    values: dict[str, list[str]] = {}
    for key, value in headers:
        values.setdefault(key, []).append(_SPACES.sub(" ", value.strip()))
    if "host" not in values and host:
        values["host"] = [host]
    lines = []
    for name in claim.signed_headers:
        if name not in values:
            raise access_denied(f"signed header {name!r} is not in the request")
        lines.append(f"{name}:{','.join(values[name])}\n")
    return "\n".join([method, path, canon_query, "".join(lines), ";".join(claim.signed_headers),
                      claim.payload_hash])


# The key is the same for every request of one secret, day, region and service: derived once
# (four HMACs a request otherwise). The gateway derives each caller's secret anyway.
@functools.lru_cache(maxsize=1024)
def signing_key(secret: str, date: str, region: str, service: str = "s3") -> bytes:
    key = hmac.digest(("AWS4" + secret).encode(), date.encode(), hashlib.sha256)
    for part in (region, service, "aws4_request"):
        key = hmac.digest(key, part.encode(), hashlib.sha256)
    return key


def request_time(amz_date: str) -> float:
    """Seconds since the epoch of an X-Amz-Date (YYYYMMDDTHHMMSSZ); ValueError if it is not
    one. By hand: time.strptime costs a request more than the whole signature check."""
    if not _DATE.fullmatch(amz_date):
        raise ValueError(f"not an X-Amz-Date: {amz_date!r}")
    return calendar.timegm(datetime(int(amz_date[0:4]), int(amz_date[4:6]), int(amz_date[6:8]),
                                    int(amz_date[9:11]), int(amz_date[11:13]),
                                    int(amz_date[13:15])).timetuple())


def verify(claim: Claim, secret: str, method: str, raw_path: str, query: list[tuple[str, str]],
           headers: list[tuple[str, str]], host: str, now: float | None = None) -> Verified:
    """Check `claim`'s signature with `secret` and its time; S3Error when either fails."""
    now = time.time() if now is None else now
    try:
        at = request_time(claim.amz_date)
    except ValueError:
        raise access_denied("X-Amz-Date is not a valid date") from None
    if claim.presigned:
        if at - now > MAX_SKEW_S:
            raise access_denied("the presigned request is dated in the future")
        if now > at + claim.expires_s:
            raise access_denied("Request has expired")
    elif abs(now - at) > MAX_SKEW_S:
        raise S3Error("RequestTimeTooSkewed", "The difference between the request time and the "
                      "current time is too large.", 403)
    key = signing_key(secret, claim.date, claim.region, claim.service)
    canonical = canonical_request(method, raw_path, query, headers, claim, host)
    to_sign = "\n".join([ALGORITHM, claim.amz_date, claim.scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, claim.signature):
        raise signature_mismatch()
    return Verified(claim, key)


def chunk_signature(verified: Verified, previous: str, chunk_sha256: str) -> str:
    """The signature of one aws-chunked chunk, chained on the previous one (the seed first)."""
    claim = verified.claim
    to_sign = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", claim.amz_date, claim.scope, previous,
                         EMPTY_SHA256, chunk_sha256])
    return hmac.new(verified.signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
