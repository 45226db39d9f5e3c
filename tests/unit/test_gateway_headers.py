"""gateway/headers.py: what the gateway changes in headers on the way to the upstream."""
from __future__ import annotations

from gateway.http.h1 import HEAD_PARSE, HEAD_TOO_LARGE, HEAD_WAIT, first_head
from gateway.headers import TRACEPARENT, new_traceparent, upstream_request_headers


def test_new_traceparents_are_valid_and_distinct():
    seen = {new_traceparent() for _ in range(200)}
    assert len(seen) == 200
    for value in seen:
        assert TRACEPARENT.match(value), value
        version, trace_id, parent_id, flags = value.split("-")
        assert (version, flags) == ("00", "01")
        assert trace_id != "0" * 32 and parent_id != "0" * 16


def test_traceparent_is_added_when_absent_and_kept_when_valid():
    headers, trace = upstream_request_headers([("accept", "*/*")], "10.0.0.1", False, "http",
                                              "example.com", None, False)
    assert ("traceparent", trace) in headers and TRACEPARENT.match(trace)
    given = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    headers, trace = upstream_request_headers([("traceparent", given)], "10.0.0.1", False,
                                              "http", "example.com", None, False)
    assert trace == given and [v for k, v in headers if k == "traceparent"] == [given]


def test_hop_by_hop_fields_and_those_connection_names_are_dropped():
    given = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    incoming = [("host", "example.com"), ("connection", "keep-alive, X-Secret"),
                ("keep-alive", "timeout=5"), ("x-secret", "s"), ("accept", "*/*"),
                ("te", "trailers"), ("x-gfs-user", "forged"), ("connection", "traceparent"),
                ("traceparent", given), ("x-forwarded-for", "1.2.3.4")]
    headers, trace = upstream_request_headers(incoming, "10.0.0.1", False, "http",
                                              "example.com", "alice", False)
    names = [k for k, _ in headers]
    assert "x-secret" not in names and "keep-alive" not in names and "te" not in names
    assert "connection" not in names
    assert trace != given and ("traceparent", trace) in headers   # named hop-by-hop: replaced
    assert dict(headers)["x-gfs-user"] == "alice"                 # never the client's
    assert dict(headers)["x-forwarded-for"] == "10.0.0.1"         # untrusted peer: its own
    plain, _ = upstream_request_headers([("host", "h"), ("connection", "close"),
                                         ("accept", "*/*")], "10.0.0.1", False, "http", "h",
                                        None, False)
    assert [k for k, _ in plain][:2] == ["host", "accept"]


def _decoded(fields: bytes) -> list[tuple[str, str]]:
    lines = fields.decode("latin-1").split("\r\n")[1:]
    return [(k.lower(), v.strip()) for k, v in (line.split(":", 1) for line in lines)]


def test_relayed_fields_keep_what_the_decoded_filter_keeps():
    from gateway.headers import downstream_response_headers, relayed_fields
    cases = [
        b"\r\nContent-Length: 5",
        b"\r\nServer: nginx\r\nConnection: keep-alive\r\nContent-Length: 5\r\nETag: \"x\"",
        b"\r\nConnection: close\r\nKeep-Alive: timeout=5\r\nX-A: 1\r\nTE: trailers",
        b"\r\nX-Connection: 1\r\nConnection-Id: 2\r\nTransfer-Encodingx: 3\r\nUpgrade: h2c",
        b"\r\nproxy-connection: x\r\nTrailer: grpc-status\r\nX-B: 2\r\nconnection:keep-alive",
        b"\r\nConnection: Keep-Alive, Upgrade\r\nUpgrade: websocket\r\nX-C: 3",
    ]
    for fields in cases:
        fields += b"\r\ncontent-length: 1" if b"Content-Length" not in fields else b""
        got = relayed_fields(fields)
        assert got is not None, fields
        assert _decoded(got) == downstream_response_headers(_decoded(fields)), fields
    assert relayed_fields(b"\r\nContent-Length: 1\r\nX-A: 1") == b"\r\nContent-Length: 1\r\nX-A: 1"
    assert relayed_fields(b"\r\nConnection: keep-alive\r\nContent-Length: 1") == \
        b"\r\nContent-Length: 1"
    # no length: the body must be framed by the gateway (chunked), left to the decoded path
    assert relayed_fields(b"\r\nX-A: 1") is None and relayed_fields(b"") is None
    # a Connection header naming an end-to-end field: left to the decoded path
    assert relayed_fields(b"\r\nConnection: X-Secret\r\nX-Secret: s\r\nContent-Length: 1") \
        is None
    assert relayed_fields(b"\r\nConnection: close\r\nClose: 1\r\nContent-Length: 1") is None


def test_a_first_head_goes_to_the_parser_when_whole_or_no_request():
    assert first_head(b"", 100) == HEAD_WAIT
    assert first_head(b"GET / HT", 100) == HEAD_WAIT
    assert first_head(b"GET /a?b=c HTTP/1.1\r\nHost: h\r\nX-Slow", 100) == HEAD_WAIT
    assert first_head(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", 100) == HEAD_PARSE   # whole
    assert first_head(b"GET / HTTP/1.1\nHost: h\n\n", 100) == HEAD_PARSE            # bare LFs
    assert first_head(b"GARBAGE\r\nHost: h\r\n", 100) == HEAD_PARSE        # no request line
    assert first_head(b"GET  / HTTP/1.1\r\n", 100) == HEAD_PARSE
    assert first_head(b"GET / HTTP/1.1 \r\n", 100) == HEAD_PARSE
    assert first_head(b"GET / HTTP/1.1\r\nHost: " + b"h" * 100, 100) == HEAD_TOO_LARGE
    assert first_head(b"GET / HTTP/1.1\r\nHost: " + b"h" * 100 + b"\r\n\r\n", 100) \
        == HEAD_PARSE                            # whole: the parser's limits refuse it
