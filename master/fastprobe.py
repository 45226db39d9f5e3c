"""Read-index probes over UDP, sent and answered on the masters' event loops.

A read-index round (master/readindex.py) over the Raft connections costs a read four thread
hand-offs and two passes through pysyncobj: the request's event loop wakes the Raft tick thread,
which sends the probe; the follower's tick thread answers it; the leader's tick thread takes the
answer and wakes the event loop again. Here the leader's event loop sends the probe itself as one
datagram to the Raft address of each follower asked (UDP, the same port number as the Raft TCP
port), the follower's event loop answers it, and the answer confirms the read on the loop that
waits for it — no tick thread on the way. At one client a stat waited ~0.5 ms for its round.

What a round proves does not change: a follower answers a probe only of its current term, while
it is not the leader, and the same majority counting confirms reads (master/readindex.py). UDP
may drop a datagram or be blocked by a firewall, so it is only an accelerator:

- the leader sends a *ping* (a random nonce) to every follower each PING_EVERY seconds; a
  follower whose answer to the latest ping came back within TRUSTED_FOR is *reachable*;
- a round goes over UDP only when every follower it asks is reachable; otherwise it goes the
  usual way, over the Raft connections;
- a round nobody answered in PROBE_PATIENCE is asked again by the tick thread over the Raft
  connections, of every follower (ReadIndex.tick).

Datagrams are authenticated like Raft frames: HMAC-SHA256 (truncated to 16 bytes) with a key
derived from the cluster secret, over the whole message, which names its sender's Raft address;
answers go to that address, never to the datagram's source. A replayed probe makes a follower
answer an old (term, seq), which counts for nothing (master/readindex.py ignores answers to
probes older than one it has); a replayed ping answer carries an old nonce and is ignored.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import os
import socket
import struct
import time
from typing import Callable, Iterable

from gfs.auth.secret import derive_key

log = logging.getLogger(__name__)

PROBE, PROBE_ACK, PING, PING_ACK = 1, 2, 3, 4
PING_EVERY = 0.5          # s between the leader's pings to each follower
TRUSTED_FOR = 1.6         # s a follower counts as reachable after answering the latest ping
_HEAD = struct.Struct(">2sBQQH")      # magic, kind, term, seq (or nonce), sender length
_MAGIC = b"gR"
_TAG = 16
MAX_DATAGRAM = 512
SILENT_WARNING_S = 10.0   # s of unanswered pings before a follower's silence is logged (once)
RESOLVE_AGAIN_S = 5.0     # s before a name is resolved again because its datagrams moved


class ProbeCodec:
    """Encodes and checks probe datagrams (pure: no sockets)."""

    def __init__(self, cluster_secret: bytes, purpose: str):
        self._key = derive_key(cluster_secret, purpose + "-udp-probes")

    def encode(self, kind: int, term: int, seq: int, sender: str) -> bytes:
        name = sender.encode()
        body = _HEAD.pack(_MAGIC, kind, term, seq, len(name)) + name
        return body + hmac.digest(self._key, body, "sha256")[:_TAG]

    def decode(self, data: bytes) -> tuple[int, int, int, str] | None:
        """(kind, term, seq, sender) of an authentic datagram; None for anything else."""
        if len(data) < _HEAD.size + _TAG or len(data) > MAX_DATAGRAM:
            return None
        body, tag = data[:-_TAG], data[-_TAG:]
        if not hmac.compare_digest(tag, hmac.digest(self._key, body, "sha256")[:_TAG]):
            return None
        magic, kind, term, seq, size = _HEAD.unpack_from(body)
        if magic != _MAGIC or len(body) != _HEAD.size + size:
            return None
        try:
            sender = body[_HEAD.size:].decode()
        except UnicodeDecodeError:
            return None
        return kind, term, seq, sender


class Reachability:
    """Which followers answered the latest ping recently (pure bookkeeping, one thread)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._nonce: dict[str, int] = {}       # follower -> nonce of the latest ping
        self._answered: dict[str, float] = {}  # follower -> when it answered that ping
        self._first_ping: dict[str, float] = {}  # follower -> when it was first pinged
        self._told: set[str] = set()             # followers already reported silent

    def ping(self, follower: str) -> int:
        nonce = int.from_bytes(os.urandom(8), "big")
        self._nonce[follower] = nonce
        self._first_ping.setdefault(follower, self.clock())
        return nonce

    def silent(self, after: float) -> list[str]:
        """Followers pinged for `after` seconds that never answered (once each)."""
        now = self.clock()
        out = [f for f, first in self._first_ping.items()
               if f not in self._answered and f not in self._told and now - first >= after]
        self._told.update(out)
        return out

    def answered(self, follower: str, nonce: int) -> None:
        if self._nonce.get(follower) == nonce:
            self._answered[follower] = self.clock()

    def reachable(self, followers: Iterable[str]) -> bool:
        now = self.clock()
        return all(now - self._answered.get(f, float("-inf")) < TRUSTED_FOR for f in followers)

    def forget(self, keep: Iterable[str]) -> None:
        keep = set(keep)
        for table in (self._nonce, self._answered, self._first_ping):
            for gone in [f for f in table if f not in keep]:
                del table[gone]
        self._told &= keep


def udp_address(address: str) -> tuple[str, int]:
    """("host", port) of a Raft address "host:port" (IPv6 in brackets)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class ProbeEndpoint(asyncio.DatagramProtocol):
    """The UDP side of one master (see the module doc); runs on its event loop.

    `raft` provides: `self_address`, `answer_probe(term) -> bool` (a follower in that term),
    `note_leader_contact()`, `fast_followers() -> dict[address, node]` (the current followers,
    while leading, else {}), `probe_term() -> int | None` (the term of this leader's rounds),
    `on_probe_ack(node, term, seq)`."""

    def __init__(self, raft, codec: ProbeCodec):
        self.raft = raft
        self.codec = codec
        self.reach = Reachability()
        self.transport: asyncio.DatagramTransport | None = None
        self._resolved: dict[str, tuple[tuple, float]] = {}   # address -> (sockaddr, when)
        self._resolving: set[str] = set()
        self.dropped = 0          # datagrams refused (unauthentic) or not sent

    # --- asyncio ---------------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport

    def error_received(self, exc: Exception) -> None:     # ICMP unreachable and the like
        self.dropped += 1

    def datagram_received(self, data: bytes, addr) -> None:
        message = self.codec.decode(data)
        if message is None:
            self.dropped += 1
            return
        kind, term, seq, sender = message
        self._where(sender, seen=addr)
        if kind in (PROBE, PING):
            if self.raft.answer_probe(term):
                self.raft.note_leader_contact()
                self._send(PROBE_ACK if kind == PROBE else PING_ACK, term, seq, sender)
        elif kind == PROBE_ACK:
            node = self.raft.fast_followers().get(sender)
            if node is not None:
                self.raft.on_probe_ack(node, term, seq)
        elif kind == PING_ACK:
            if term == self.raft.probe_term():
                self.reach.answered(sender, seq)

    # --- sending ---------------------------------------------------------------------------

    def _where(self, address: str, seen: tuple | None = None, refresh: bool = False
               ) -> tuple | None:
        """The socket address of Raft address `address`, as last resolved. A name is resolved
        off the loop (loop.getaddrinfo), so the datagram that needed it first is dropped;
        resolved again when `refresh`, or when a datagram of `address` came from elsewhere
        (`seen`: a restarted pod's new IP) and the last resolution is RESOLVE_AGAIN_S old."""
        known = self._resolved.get(address)
        if known is None:
            numeric = _numeric(address)
            if numeric is not None:
                self._resolved[address] = (numeric, float("inf"))
                return numeric
        elif not refresh and (seen is None or seen[0] == known[0][0]
                              or time.monotonic() - known[1] < RESOLVE_AGAIN_S):
            return known[0]
        if address not in self._resolving and (known is None or known[1] != float("inf")):
            self._resolving.add(address)
            asyncio.get_running_loop().create_task(self._resolve(address))
        return None if known is None else known[0]

    async def _resolve(self, address: str) -> None:
        try:
            host, port = udp_address(address)
            infos = await asyncio.get_running_loop().getaddrinfo(host, port,
                                                                  type=socket.SOCK_DGRAM)
            self._resolved[address] = (infos[0][4], time.monotonic())
        except (OSError, ValueError) as err:
            log.debug("cannot resolve %s for read probes: %s", address, err)
        finally:
            self._resolving.discard(address)

    def _send(self, kind: int, term: int, seq: int, to: str) -> None:
        if self.transport is None:
            return
        where = self._where(to)
        if where is None:
            self.dropped += 1
            return
        try:
            self.transport.sendto(self.codec.encode(kind, term, seq, self.raft.self_address),
                                  where)
        except (OSError, ValueError):
            self.dropped += 1

    def probe(self, term: int, seq: int, followers: Iterable[str]) -> None:
        for follower in followers:
            self._send(PROBE, term, seq, follower)

    def reachable(self, followers: Iterable[str]) -> bool:
        return self.transport is not None and self.reach.reachable(followers)

    async def ping_forever(self) -> None:
        """While leading, ping every follower each PING_EVERY seconds."""
        while True:
            try:
                term = self.raft.probe_term()
                followers = list(self.raft.fast_followers())
                self.reach.forget(followers)
                if term is not None:
                    for follower in followers:
                        if not self.reach.reachable([follower]):     # its name may have moved
                            self._where(follower, refresh=True)
                        self._send(PING, term, self.reach.ping(follower), follower)
                    for follower in self.reach.silent(SILENT_WARNING_S):
                        log.warning("read probes to %s over UDP get no answer: reads ask it over "
                                    "the Raft connections (slower); allow UDP on the Raft port "
                                    "between masters", follower)
            except Exception:          # never stop pinging (reads would lose the fast path)
                log.exception("read-probe ping failed")
            await asyncio.sleep(PING_EVERY)


def _numeric(address: str) -> tuple | None:
    """The socket address of a Raft address whose host is an IP literal (no DNS), else None."""
    try:
        host, port = udp_address(address)
        return socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM,
                                  flags=socket.AI_NUMERICHOST)[0][4]
    except (OSError, ValueError):
        return None


async def open_endpoint(raft, codec: ProbeCodec) -> ProbeEndpoint | None:
    """The endpoint bound to the UDP port of this master's Raft address; None when that port
    cannot be had (then every round goes over the Raft connections)."""
    loop = asyncio.get_running_loop()
    host, port = udp_address(raft.self_address)
    try:
        _, endpoint = await loop.create_datagram_endpoint(lambda: ProbeEndpoint(raft, codec),
                                                          local_addr=(host, port))
    except OSError as err:
        log.warning("read probes over UDP off: cannot bind %s/udp (%s); they go over the Raft "
                    "connections", raft.self_address, err)
        return None
    return endpoint
