"""Read-index probes over UDP (master/fastprobe.py): the datagrams' authentication, which
followers count as reachable, and how a round started from the event loop is counted
(master/readindex.py start_round)."""
from __future__ import annotations

from master.fastprobe import (PING, PROBE, PROBE_ACK, TRUSTED_FOR, ProbeCodec, Reachability,
                              udp_address)
from master.readindex import PROBE_PATIENCE, ROUND_OUT, ReadIndex
from tests.unit.test_read_index import Clock


def test_datagrams_verify_with_the_same_secret_only():
    codec = ProbeCodec(b"s" * 32, "gfs-raft-frames")
    data = codec.encode(PROBE, 7, 42, "10.0.0.1:4321")
    assert codec.decode(data) == (PROBE, 7, 42, "10.0.0.1:4321")
    assert ProbeCodec(b"t" * 32, "gfs-raft-frames").decode(data) is None     # other cluster
    assert ProbeCodec(b"s" * 32, "gfs-raft-frames-insecure").decode(data) is None
    for bad in (data[:-1], data[:10], b"", data + b"x", bytes([data[0] ^ 1]) + data[1:],
                data[:5] + bytes([data[5] ^ 1]) + data[6:], b"\0" * 600):
        assert codec.decode(bad) is None
    # The sender named inside is what an answer goes to: it is covered by the tag.
    forged = data.replace(b"10.0.0.1", b"10.0.0.9")
    assert codec.decode(forged) is None


def test_a_follower_is_reachable_while_it_answers_the_latest_ping():
    clock = Clock()
    reach = Reachability(clock)
    assert not reach.reachable(["b"]) and reach.reachable([])
    old = reach.ping("b")
    new = reach.ping("b")
    reach.answered("b", old)                     # an answer to an earlier ping (or a replay)
    assert not reach.reachable(["b"])
    reach.answered("b", new)
    assert reach.reachable(["b"]) and not reach.reachable(["b", "c"])
    clock.t += TRUSTED_FOR + 0.01
    assert not reach.reachable(["b"])             # no answer lately
    reach.forget(["c"])
    reach.answered("b", new)
    assert not reach.reachable(["b"])             # gone from the group: its nonce too
    reach.ping("c")                               # never answers (UDP dropped on the way)
    clock.t += 5
    assert reach.silent(10) == []
    clock.t += 5
    assert reach.silent(10) == ["c"] and reach.silent(10) == []      # logged once


def test_udp_address_takes_ipv4_ipv6_and_names():
    assert udp_address("10.0.0.1:9000") == ("10.0.0.1", 9000)
    assert udp_address("[::1]:9000") == ("::1", 9000)
    assert udp_address("master-1.lan:9000") == ("master-1.lan", 9000)


def test_a_round_started_from_the_loop_counts_like_the_tick_threads():
    clock = Clock()
    ri = ReadIndex(2, clock=clock)
    everyone = ["b", "c"]
    waiting = ri.submit(1.0, wake=False)
    # Before a tick saw this master leading with its own entry committed: the tick's job.
    assert ri.start_round(10, everyone, lambda targets: True) is None
    assert ri.tick(True, 5, commit=10, ready=False, applied=10) is None
    assert ri.start_round(10, everyone, lambda targets: True) is None
    assert ri.leading_term() is None
    s1 = ri.tick(True, 5, commit=10, ready=True, applied=10)       # the tick sends this one
    assert ri.leading_term() == 5
    ri.on_ack("b", 5, s1, applied=10)
    assert waiting.result(0) == 10
    # From the loop: the quickest follower, when it is usable, else nothing (tick's job).
    second = ri.submit(1.0, wake=False)
    assert ri.start_round(11, everyone, lambda targets: False) is None
    seq, term, targets = ri.start_round(11, everyone, lambda targets: targets == ["b"])
    assert (seq, term, targets) == (s1 + 1, 5, ["b"])
    third = ri.submit(1.0, wake=False)
    assert ri.start_round(12, everyone, lambda targets: True) == ROUND_OUT
    ri.on_ack("b", 5, seq, applied=12)
    assert second.result(0) == 11 and not third.done()      # third came after that probe
    # Nobody answers the loop's round: after PROBE_PATIENCE the tick asks everyone again.
    s3, _, _ = ri.start_round(12, everyone, lambda targets: True)
    clock.t += 2 * PROBE_PATIENCE
    s4 = ri.tick(True, 5, commit=12, ready=True, applied=12)
    assert s4 == s3 + 1 and ri.probe_targets(s4, everyone) == everyone
    ri.on_ack("c", 5, s4, applied=12)
    assert third.result(0) == 12
    # A new term: the loop starts nothing until a tick saw this master lead in it.
    ri.submit(1.0, wake=False)
    ri.tick(False, 6, commit=12, ready=False, applied=12)
    assert ri.start_round(12, everyone, lambda targets: True) is None
    assert ri.leading_term() is None


def test_ping_and_probe_kinds_differ():
    codec = ProbeCodec(b"k" * 32, "p")
    assert codec.decode(codec.encode(PING, 1, 2, "a:1"))[0] == PING
    assert codec.decode(codec.encode(PROBE_ACK, 1, 2, "a:1"))[0] == PROBE_ACK


def test_reads_the_loop_cannot_send_a_round_for_wake_the_tick_thread_once_per_batch():
    wakes = []
    ri = ReadIndex(2, wake=lambda: wakes.append(1))
    for _ in range(3):
        ri.submit(1.0, wake=False)
        ri.nudge()                            # start_round said no (UDP unusable, say)
    assert len(wakes) == 1
    s1 = ri.tick(True, 5, commit=1, ready=True, applied=1)
    ri.on_ack("b", 5, s1, applied=1)
    ri.nudge()                                # nothing waits: no wake
    assert len(wakes) == 1
    ri.submit(1.0, wake=False)
    ri.nudge()                                # a new batch after the round took the last
    assert len(wakes) == 2


class FakeRaft:
    """What ProbeEndpoint asks of MetadataRaft: a leader of term 5 or a follower in it."""

    def __init__(self, address: str, leading: bool, followers=()):
        self.self_address = address
        self.leading = leading
        self.followers = {f: f"node-{f}" for f in followers}
        self.acks: list = []
        self.contacts = 0

    def answer_probe(self, term: int) -> bool:
        return term == 5 and not self.leading

    def note_leader_contact(self) -> None:
        self.contacts += 1

    def fast_followers(self) -> dict:
        return self.followers if self.leading else {}

    def probe_term(self):
        return 5 if self.leading else None

    def on_probe_ack(self, node, term: int, seq: int) -> None:
        self.acks.append((node, term, seq))


def test_endpoints_ping_probe_and_answer_over_real_udp_sockets():
    """Two endpoints on loopback: the follower (named by host name, resolved off the loop)
    becomes reachable once it answered a ping, answers probes of its term only, and a datagram
    signed with another secret is dropped unanswered."""
    import asyncio
    import socket

    from master import fastprobe

    def free_udp_port() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    async def run():
        codec = ProbeCodec(b"s" * 32, "test")
        # a host name where it resolves to IPv4 first (the leader's socket here is IPv4)
        name = "localhost" if socket.getaddrinfo("localhost", 0, type=socket.SOCK_DGRAM)[0][0] \
            == socket.AF_INET else "127.0.0.1"
        follower_at = f"{name}:{free_udp_port()}"
        leader = FakeRaft(f"127.0.0.1:{free_udp_port()}", True, [follower_at])
        follower = FakeRaft(follower_at, False)
        lead = await fastprobe.open_endpoint(leader, codec)
        foll = await fastprobe.open_endpoint(follower, codec)
        pinging = asyncio.create_task(lead.ping_forever())
        try:
            for _ in range(100):
                if lead.reachable([follower_at]):
                    break
                await asyncio.sleep(0.05)
            assert lead.reachable([follower_at]) and follower.contacts >= 1
            lead.probe(5, 7, [follower_at])
            lead.probe(4, 8, [follower_at])           # an older term: no answer
            for _ in range(100):
                if leader.acks:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            assert leader.acks == [(f"node-{follower_at}", 5, 7)]
            forged = ProbeCodec(b"t" * 32, "test").encode(fastprobe.PROBE, 5, 9,
                                                          leader.self_address)
            dropped = foll.dropped
            lead.transport.sendto(forged, ("127.0.0.1", fastprobe.udp_address(follower_at)[1]))
            await asyncio.sleep(0.1)
            assert foll.dropped == dropped + 1 and len(leader.acks) == 1
        finally:
            pinging.cancel()
            lead.transport.close()
            foll.transport.close()
    asyncio.run(run())
