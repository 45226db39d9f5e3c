"""The PROXY protocol header (gateway/http/proxyproto.py), alone and in front of requests to a
server that trusts only its configured balancers."""
from __future__ import annotations

import pytest

from gateway.http.proxyproto import ProxyHeaderError, parse, v2_header
from gateway.routing.cidr import PrefixTrie
from tests.unit.gateway_server import ServerThread, closed_by_peer, read_response


def test_v1_and_v2_headers():
    assert parse(b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 443\r\nGET") == \
        (("203.0.113.7", 5555), 42)
    assert parse(b"PROXY TCP6 2001:db8::7 2001:db8::1 5555 443\r\n")[0] == ("2001:db8::7", 5555)
    assert parse(b"PROXY UNKNOWN\r\n") == (None, 15)
    header = v2_header(("198.51.100.9", 40000), ("10.0.0.1", 443))
    assert parse(header + b"GET /") == (("198.51.100.9", 40000), len(header))
    header6 = v2_header(("2001:db8::9", 1), ("2001:db8::1", 443))
    assert parse(header6) == (("2001:db8::9", 1), len(header6))
    local = b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00"
    assert parse(local) == (None, 16)


def test_incomplete_headers_ask_for_more():
    header = v2_header(("198.51.100.9", 40000), ("10.0.0.1", 443))
    for cut in (0, 1, 5, 12, 15, len(header) - 1):
        assert parse(header[:cut]) is None
    assert parse(b"PROXY TCP4 1.2.3.4") is None


@pytest.mark.parametrize("bad", [
    b"GET / HTTP/1.1\r\n", b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 1\r\n",
    b"PROXY TCP4 ::1 ::1 1 1\r\n", b"PROXY TCP9 a b c d\r\n", b"PROXY " + b"x" * 120,
    b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c" + b"\x00" * 12,          # version 3
    b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x04\x00"])                         # block too long
def test_bad_headers(bad):
    with pytest.raises(ProxyHeaderError):
        parse(bad)


async def _peer_app(ex):
    await ex.respond(200, f"{ex.head.peer[0]}:{ex.head.peer[1]}".encode())


def test_only_configured_balancers_send_a_header():
    trusted = PrefixTrie()
    trusted.insert("127.0.0.0/8", True)
    srv = ServerThread(_peer_app)
    srv.server.proxy_from = trusted
    try:
        s = srv.connect()
        s.sendall(v2_header(("203.0.113.7", 5555), ("127.0.0.1", 80)))
        s.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert read_response(s)[2] == b"203.0.113.7:5555"
        s = srv.connect()                   # the header split over several packets, then h1
        s.sendall(b"PROXY TCP4 203.0.113.8 10.0.0.1 ")
        s.sendall(b"6666 80\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert read_response(s)[2] == b"203.0.113.8:6666"
        s = srv.connect()                   # a trusted peer that sends no header is cut off
        s.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert closed_by_peer(s)
        srv.server.proxy_from = None        # untrusted: PROXY bytes are just a bad request
        s = srv.connect()
        s.sendall(b"PROXY TCP4 203.0.113.8 10.0.0.1 6666 80\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert read_response(s)[0] == 400
    finally:
        srv.stop()
