"""The PROXY protocol (v1 text and v2 binary, as HAProxy specifies it): how an L4 balancer in
front tells the gateway the client's address. Sans-IO: `parse(buffer)` says what the header
holds and how many bytes it took, or that more bytes are needed. Only read from peers the
gateway was told to trust (`--proxy-protocol-from`); from anyone else these bytes are not
special."""
from __future__ import annotations

import ipaddress
import struct

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107
V2_MAX = 16 + 216                 # header plus the largest address block we accept


class ProxyHeaderError(ValueError):
    """Not a valid PROXY protocol header."""


def parse(buf: bytes) -> tuple[tuple[str, int] | None, int] | None:
    """((client ip, port) or None for LOCAL/UNKNOWN, bytes consumed), or None: need more."""
    if buf[:1] == b"P" or not buf:
        if b"PROXY "[:len(buf)] != buf[:6]:
            raise ProxyHeaderError("expected a PROXY protocol header")
        end = buf.find(b"\r\n")
        if end < 0:
            if len(buf) >= V1_MAX:
                raise ProxyHeaderError("PROXY v1 header too long")
            return None
        return _v1(buf[:end].decode("ascii", "replace")), end + 2
    if len(buf) < 16:
        if not V2_SIGNATURE.startswith(buf[:12]):
            raise ProxyHeaderError("expected a PROXY protocol header")
        return None
    if buf[:12] != V2_SIGNATURE:
        raise ProxyHeaderError("expected a PROXY protocol header")
    ver_cmd, family, length = buf[12], buf[13], struct.unpack(">H", buf[14:16])[0]
    if ver_cmd >> 4 != 2 or ver_cmd & 0xF not in (0, 1):
        raise ProxyHeaderError("bad PROXY v2 version or command")
    if length > V2_MAX - 16:
        raise ProxyHeaderError("PROXY v2 address block too long")
    if len(buf) < 16 + length:
        return None
    block = buf[16:16 + length]
    if ver_cmd & 0xF == 0:                      # LOCAL: the balancer's own health check
        return None, 16 + length
    if family == 0x11 and length >= 12:         # TCP over IPv4
        src, _, sport, _ = struct.unpack(">4s4sHH", block[:12])
        return (str(ipaddress.IPv4Address(src)), sport), 16 + length
    if family == 0x21 and length >= 36:         # TCP over IPv6
        src, _, sport, _ = struct.unpack(">16s16sHH", block[:36])
        return (str(ipaddress.IPv6Address(src)), sport), 16 + length
    if family >> 4 == 0:                        # UNSPEC
        return None, 16 + length
    raise ProxyHeaderError(f"unsupported PROXY v2 address family 0x{family:02x}")


def _v1(line: str) -> tuple[str, int] | None:
    parts = line.split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return None
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"bad PROXY v1 header {line[:60]!r}")
    try:
        src = ipaddress.ip_address(parts[2])
        ipaddress.ip_address(parts[3])
        sport, dport = int(parts[4]), int(parts[5])
    except ValueError:
        raise ProxyHeaderError(f"bad PROXY v1 header {line[:60]!r}") from None
    if (src.version == 4) != (parts[1] == "TCP4") or not (0 <= sport <= 65535 and
                                                           0 <= dport <= 65535):
        raise ProxyHeaderError(f"bad PROXY v1 header {line[:60]!r}")
    return str(src), sport


def v2_header(src: tuple[str, int], dst: tuple[str, int]) -> bytes:
    """A PROXY v2 header for TCP from `src` to `dst` (what an L4 balancer sends)."""
    s, d = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
    if s.version == 4:
        block = struct.pack(">4s4sHH", s.packed, d.packed, src[1], dst[1])
        family = 0x11
    else:
        block = struct.pack(">16s16sHH", s.packed, d.packed, src[1], dst[1])
        family = 0x21
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack(">H", len(block)) + block


def v2_local_header() -> bytes:
    """A PROXY v2 LOCAL header: a connection of the balancer's own (a health check), not a
    client's."""
    return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack(">H", 0)
