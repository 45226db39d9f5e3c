"""SigV4 verification (gateway/s3/sigv4.py) against botocore's signer as the oracle."""
from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from gateway.s3 import sigv4
from gateway.s3.errors import S3Error

CREDS = Credentials("GKTESTACCESSKEY00001", "s3cr3t/with+odd=chars")


def _split(req) -> tuple[str, str, list[tuple[str, str]]]:
    parts = urlsplit(req.url)
    headers = [(k.lower(), v if isinstance(v, str) else v.decode()) for k, v in req.headers.items()]
    return parts.path, parts.query, headers


def signed(method: str, url: str, headers: dict | None = None, body: bytes = b"",
           region: str = "us-east-1"):
    req = AWSRequest(method=method, url=url, headers=headers or {}, data=body)
    S3SigV4Auth(CREDS, "s3", region).add_auth(req)
    return req


def check(req, secret: str = CREDS.secret_key, now: float | None = None, host="127.0.0.1:9000"):
    path, query, headers = _split(req)
    pairs = sigv4.parse_query(query)
    claim = sigv4.parse_auth(headers, pairs)
    assert claim is not None
    return sigv4.verify(claim, secret, req.method, path, pairs, headers, host, now)


URLS = ["http://127.0.0.1:9000/",
        "http://127.0.0.1:9000/bucket",
        "http://127.0.0.1:9000/bucket/a%20b/c%2Bd/%E2%82%AC~x_y.z",
        "http://127.0.0.1:9000/bucket/a//b/",
        "http://127.0.0.1:9000/bucket?list-type=2&prefix=a%2Fb&delimiter=%2F&max-keys=3",
        "http://127.0.0.1:9000/bucket?delete",
        "http://127.0.0.1:9000/bucket/k?uploads&x=%20y%2Bz"]


@pytest.mark.parametrize("url", URLS)
def test_header_signatures_from_botocore_verify(url):
    req = signed("GET", url, {"Range": "bytes=0-9", "X-Amz-Meta-Who": "  a   b "})
    result = check(req)
    assert result.claim.access_key == CREDS.access_key
    assert result.claim.region == "us-east-1"


def test_put_with_payload_hash_and_other_region():
    req = signed("PUT", "http://127.0.0.1:9000/b/k", {"Content-Type": "text/plain"}, b"hello",
                 region="eu-west-3")
    assert check(req).claim.payload_hash == __import__("hashlib").sha256(b"hello").hexdigest()


@pytest.mark.parametrize("tamper", ["method", "path", "query", "header", "secret"])
def test_any_change_breaks_the_signature(tamper):
    req = signed("GET", "http://127.0.0.1:9000/b/k?x=1", {"X-Amz-Meta-A": "1"})
    path, query, headers = _split(req)
    method, secret = "GET", CREDS.secret_key
    if tamper == "method":
        method = "DELETE"
    elif tamper == "path":
        path = "/b/K"
    elif tamper == "query":
        query = "x=2"
    elif tamper == "header":
        headers = [(k, "2" if k == "x-amz-meta-a" else v) for k, v in headers]
    else:
        secret = "other"
    pairs = sigv4.parse_query(query)
    claim = sigv4.parse_auth(headers, pairs)
    with pytest.raises(S3Error) as err:
        sigv4.verify(claim, secret, method, path, pairs, headers, "127.0.0.1:9000")
    assert err.value.code == "SignatureDoesNotMatch"


def test_clock_skew_beyond_15_minutes_is_refused():
    req = signed("GET", "http://127.0.0.1:9000/b/k")
    check(req, now=time.time() + 14 * 60)
    for skew in (16 * 60, -16 * 60):
        with pytest.raises(S3Error) as err:
            check(req, now=time.time() + skew)
        assert err.value.code == "RequestTimeTooSkewed"


def presigned(method: str, url: str, expires: int = 60):
    req = AWSRequest(method=method, url=url)
    S3SigV4QueryAuth(CREDS, "s3", "us-east-1", expires=expires).add_auth(req)
    parts = urlsplit(req.url)
    return req, parts.path, parts.query


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_presigned_urls_verify_until_they_expire(method):
    req, path, query = presigned(method, "http://127.0.0.1:9000/b/dir/k%20x?versionId=", 60)
    headers = [("host", "127.0.0.1:9000")]
    pairs = sigv4.parse_query(query)
    claim = sigv4.parse_auth(headers, pairs)
    assert claim.presigned and claim.payload_hash == sigv4.UNSIGNED
    sigv4.verify(claim, CREDS.secret_key, method, path, pairs, headers, "")
    with pytest.raises(S3Error) as err:
        sigv4.verify(claim, CREDS.secret_key, method, path, pairs, headers, "",
                     now=time.time() + 61)
    assert err.value.code == "AccessDenied" and "expired" in err.value.message
    with pytest.raises(S3Error):
        sigv4.verify(claim, CREDS.secret_key, "DELETE", path, pairs, headers, "")


def test_anonymous_and_malformed_claims():
    assert sigv4.parse_auth([("host", "h")], []) is None
    bad = ["AWS abc:def", "AWS4-HMAC-SHA256 Credential=x", "AWS4-HMAC-SHA256 Credential=a/b/c/d/e,"
           " SignedHeaders=host, Signature=00", "AWS4-HMAC-SHA256 Credential=AK/20240101/r/s3/"
           "aws4_request, SignedHeaders=x-amz-date, Signature=" + "0" * 64]
    for header in bad:
        with pytest.raises(S3Error):
            sigv4.parse_auth([("authorization", header), ("x-amz-date", "20240101T000000Z"),
                              ("x-amz-content-sha256", sigv4.UNSIGNED)], [])


def test_chunk_signatures_match_the_aws_documentation_example():
    """The worked example of AWS's 'Signature Calculations for the Authorization Header:
    Transferring Payload in Multiple Chunks' (its secret, seed and chunk signatures)."""
    import hashlib
    claim = sigv4.Claim("AKIAIOSFODNN7EXAMPLE", "20130524", "us-east-1", "s3",
                        "20130524T000000Z", ("host",), "4f232c4386841ef735655705268965c44a0e4690"
                        "baa4adea153f7db9fa80a0a9", sigv4.STREAMING_SIGNED)
    key = sigv4.signing_key("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "20130524", "us-east-1")
    verified = sigv4.Verified(claim, key)
    first = sigv4.chunk_signature(verified, claim.signature,
                                  hashlib.sha256(b"a" * 65536).hexdigest())
    assert first == "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"
    second = sigv4.chunk_signature(verified, first, hashlib.sha256(b"a" * 1024).hexdigest())
    assert second == "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"
    last = sigv4.chunk_signature(verified, second, sigv4.EMPTY_SHA256)
    assert last == "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"


def test_request_time_parses_x_amz_date_as_strptime_would_and_refuses_the_rest():
    import calendar
    for good in ("20130524T000000Z", "19700101T000000Z", "20240229T235959Z",
                 "20261202T111504Z"):
        assert sigv4.request_time(good) == calendar.timegm(
            time.strptime(good, "%Y%m%dT%H%M%SZ"))
    for bad in ("20131324T000000Z", "20230229T000000Z", "20130524T240000Z",
                "20130524T000060Z", "2013052T000000Z", "20130524T000000", "20130524T000000Zx",
                "20130524T000000Z\n", "２０130524T000000Z", "20130524 000000Z", ""):
        with pytest.raises(ValueError):
            sigv4.request_time(bad)
