"""What the gateway changes in headers on the way through: hop-by-hop headers dropped, the
X-Forwarded-* set, the authenticated identity set (always overwritten), W3C traceparent
passed through or added."""
from __future__ import annotations

import re
from random import getrandbits as _random_bits

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                        "te", "trailer", "upgrade", "http2-settings", "expect"})
IDENTITY_HEADER = "x-gfs-user"
TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


_DROP_UP = HOP_BY_HOP | {IDENTITY_HEADER}


def _dropped(headers: list[tuple[str, str]], always: frozenset[str]) -> frozenset[str]:
    """`always`, and the fields a Connection header lists (hop-by-hop for this message);
    `always` itself when that adds nothing — when what it lists is there already or names no
    field the message has (`Connection: close`: the callers then need no second pass)."""
    listed = {t.strip().lower() for k, v in headers if k == "connection" for t in v.split(",")}
    listed -= always
    if not listed or not any(k in listed for k, _ in headers):
        return always
    return always | listed


def new_traceparent() -> str:
    """A new W3C traceparent. Trace ids need to be unique, not secret: they come from the
    process's Mersenne Twister (seeded from the OS at start and again in each forked worker)
    rather than a getrandom() system call per request."""
    return "00-%032x-%016x-01" % (_random_bits(128), _random_bits(64))


def upstream_request_headers(headers: list[tuple[str, str]], peer_ip: str, peer_trusted: bool,
                             scheme: str, host: str, identity: str | None,
                             grpc: bool) -> tuple[list[tuple[str, str]], str]:
    """The request headers for the upstream, and the traceparent they carry."""
    return _upstream_request_headers(headers, peer_ip, peer_trusted, scheme, host, identity,
                                     grpc, _DROP_UP)


def _upstream_request_headers(headers, peer_ip, peer_trusted, scheme, host, identity, grpc,
                              drop):
    out: list[tuple[str, str]] = []
    forwarded = []
    traceparent = ""
    for k, v in headers:
        if k in drop or k[0] == ":":
            if k == "connection" and drop is _DROP_UP:
                more = _dropped(headers, _DROP_UP)      # fields it names: hop-by-hop too
                if more is not _DROP_UP:                # (rare: start again without them)
                    return _upstream_request_headers(headers, peer_ip, peer_trusted, scheme,
                                                     host, identity, grpc, more)
            continue
        if k == "x-forwarded-for":
            if peer_trusted:
                forwarded.append(v)
            continue
        if k in ("x-forwarded-proto", "x-forwarded-host") and not peer_trusted:
            continue
        if k == "traceparent":
            if not TRACEPARENT.match(v) or v.startswith("ff"):
                continue                          # invalid: replaced, as W3C says
            traceparent = v
        out.append((k, v))
    forwarded.append(peer_ip)                     # this hop, after those a trusted proxy saw
    out.append(("x-forwarded-for", ", ".join(forwarded)))
    if not peer_trusted:
        out.append(("x-forwarded-proto", scheme))
        out.append(("x-forwarded-host", host))
    if not traceparent:
        traceparent = new_traceparent()
        out.append(("traceparent", traceparent))
    if identity:
        out.append((IDENTITY_HEADER, identity))
    if grpc:
        out.append(("te", "trailers"))
    return out, traceparent


def downstream_response_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out = [(k, v) for k, v in headers if k not in HOP_BY_HOP]
    if len(out) == len(headers):
        return out                               # not even a Connection header
    drop = _dropped(headers, HOP_BY_HOP)
    return out if drop is HOP_BY_HOP else [(k, v) for k, v in out if k not in drop]


_HOP_BY_HOP_BYTES = frozenset(name.encode() for name in HOP_BY_HOP)
_HOP_FIELD = re.compile(rb"\r\n(" + b"|".join(sorted(_HOP_BY_HOP_BYTES)) + rb"):([^\r]*)")


def relayed_fields(fields: bytes) -> bytes | None:
    """What `downstream_response_headers` keeps of an HTTP/1.1 response head, done on its bytes
    as they came: `fields` is the head's header lines, each with the CRLF before it
    (b"\\r\\nServer: x\\r\\nContent-Length: 5"), as httptools accepted them (CRLF line ends, no
    space before a colon, no folded lines). Returns the same lines without the hop-by-hop ones,
    in the upstream's own spelling; None when a Connection header names another field that
    the head has, or when it has no Content-Length (the caller decodes the head then: it may
    have to frame the body itself). For the proxy's fast path: a regular
    expression's pass in C instead of decoding, filtering and formatting every field."""
    lower = fields.lower()
    if b"\r\ncontent-length:" not in lower:
        return None
    kept, at = [], 0
    for found in _HOP_FIELD.finditer(lower):
        name, value = found.group(1, 2)
        if name == b"connection" and value.strip() != b"keep-alive":
            for token in value.split(b","):
                token = token.strip()
                if token and token not in _HOP_BY_HOP_BYTES \
                        and b"\r\n" + token + b":" in lower:
                    return None
        kept.append(fields[at:found.start()])
        at = found.end()
    if not at:
        return fields
    kept.append(fields[at:])
    return b"".join(kept)
