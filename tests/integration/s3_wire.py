"""Raw S3 requests for the streaming and bad-input tests: a request signed by botocore's
SigV4 signer (the seed), its aws-chunked body signed chunk by chunk (the chunk signature chain,
whose computation tests/unit/test_s3_sigv4.py checks against AWS's documented example)."""
from __future__ import annotations

import hashlib
import http.client
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from gateway.s3 import sigv4


def signed_chunked_put(endpoint: str, user, path: str, data: bytes, chunk: int = 8192,
                       tamper_chunk: int = -1, cut: int = -1) -> tuple[int, bytes]:
    """PUT `data` at `path` as STREAMING-AWS4-HMAC-SHA256-PAYLOAD. `tamper_chunk`: flip a byte
    of that chunk after signing; `cut`: send only this many bytes of the encoded body."""
    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)] + [b""]
    sizes = encoded_length(len(data), chunk)
    netloc = urlsplit(endpoint).netloc
    req = AWSRequest(method="PUT", url=endpoint + path, headers={
        "X-Amz-Content-SHA256": sigv4.STREAMING_SIGNED, "Content-Encoding": "aws-chunked",
        "X-Amz-Decoded-Content-Length": str(len(data)),
        "Content-Length": str(min(sizes, cut) if cut >= 0 else sizes)})
    SigV4Auth(Credentials(user.access_key, user.secret), "s3", "us-east-1").add_auth(req)
    headers = {k: v for k, v in req.headers.items()}
    auth = headers["Authorization"]
    seed = auth.rsplit("Signature=", 1)[1]
    scope = auth.split("Credential=", 1)[1].split(",")[0].split("/", 1)[1]
    date, region = scope.split("/")[0], scope.split("/")[1]
    claim = sigv4.Claim(user.access_key, date, region, "s3", headers["X-Amz-Date"], ("host",),
                        seed, sigv4.STREAMING_SIGNED)
    verified = sigv4.Verified(claim, sigv4.signing_key(user.secret, date, region))
    body, previous = bytearray(), seed
    for i, piece in enumerate(pieces):
        previous = sigv4.chunk_signature(verified, previous, hashlib.sha256(piece).hexdigest())
        sent = piece
        if i == tamper_chunk and piece:
            sent = bytes([piece[0] ^ 1]) + piece[1:]
        body += f"{len(piece):x};chunk-signature={previous}\r\n".encode() + sent + b"\r\n"
    if cut >= 0:
        body = body[:cut]
    return raw(netloc, "PUT", path, headers, bytes(body))


def encoded_length(size: int, chunk: int) -> int:
    """The length of `size` bytes as signed aws-chunked chunks of `chunk` bytes."""
    lengths = [min(chunk, size - i) for i in range(0, size, chunk)] + [0]
    return sum(len(f"{n:x};chunk-signature={'0' * 64}\r\n") + n + 2 for n in lengths)


def raw(netloc: str, method: str, path: str, headers: dict, body: bytes = b"") -> tuple[int, bytes]:
    host, port = netloc.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for key, value in headers.items():
            if key.lower() != "host":
                conn.putheader(key, value)
        conn.putheader("Host", netloc)
        if "Content-Length" not in headers and body:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()
