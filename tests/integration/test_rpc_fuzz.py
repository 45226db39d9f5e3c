"""Every gRPC method of the masters and chunkservers, fed what no client sends: random bytes,
truncated messages, well-formed messages with hostile field values, oversized messages.

Against one real cluster (3 masters, 2 chunkservers). Each request must get a clear status (the
error contract in docs/errors.md), add at most one line to the daemon's log and no traceback;
every daemon must stay up and serve a normal put and get afterwards.

Calls carry the `rpc_metadata` fixture's metadata (none: an anonymous caller), so the same fuzz
runs with credentials by adding a parameter to that fixture.
"""
from __future__ import annotations

import collections
import io
import json
import random
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gfs.auth.daemon import DaemonAuth
from gfs.auth.tokens import bearer
from gfs.transfer import MAX_REQUEST_BYTES as CHUNKSERVER_MAX
from master.server import MAX_REQUEST_BYTES as MASTER_MAX
from proto import chunkserver_pb2 as cpb
from proto import identity_pb2 as ipb
from proto import master_pb2 as pb
from proto import oidc_pb2 as opb
from proto import routes_pb2 as rpb
from tests.integration.polling import wait_for
from tests.integration.rpcfuzz import (BAD_INPUT_CODES, Method, Outcome, call_raw,
                                       hostile_messages, oversized_body, service_methods,
                                       truncations)

MASTER_METHODS = (service_methods(pb, "Master") + service_methods(ipb, "Identity")
                  + service_methods(opb, "Oidc") + service_methods(rpb, "Routes"))
CHUNKSERVER_METHODS = service_methods(cpb, "Chunkserver")
OPTS = {"master": {"chunk-size": "1MiB", "dead-after": 3},
        "chunkserver": {"heartbeat-interval": 0.3}}
EXAMPLES = 10                      # hostile messages per method (hypothesis examples)
RANDOM_BODIES = 4                  # random byte strings per method and daemon
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=False,
                         suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                HealthCheck.too_slow])


class Fuzzer:
    """Sends raw requests to the cluster's daemons and keeps count, per daemon, of requests
    sent and of the lines each daemon's log had before."""

    def __init__(self, cluster, metadata):
        self.cluster = cluster
        self.metadata = metadata
        self._channels: dict[str, grpc.Channel] = {}
        self.sent: collections.Counter = collections.Counter()
        self.seed: dict = {}
        self.caller = ""

    def address(self, name: str) -> str:
        d = self.cluster.daemon(name)
        return d.get("grpc") or d["bind"]

    def channel(self, name: str) -> grpc.Channel:
        address = self.address(name)
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.insecure_channel(
                address, [("grpc.max_send_message_length", -1), ("grpc.enable_retries", 0)])
        return channel

    def send(self, name: str, method: Method, bodies: list[bytes]) -> Outcome:
        """Send one request to daemon `name`; fails the test unless the status is clear."""
        self.sent[name] += 1
        outcome = call_raw(self.channel(name), method, bodies, timeout=20,
                           metadata=self.metadata)
        assert_clear(name, method, outcome)
        return outcome

    def leader(self) -> str:
        return wait_for(self.cluster.leader, 30, "a leader")

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()


def assert_clear(name: str, method: Method, o: Outcome) -> None:
    """The status is one the error contract allows for input no client sends."""
    if o.code == grpc.StatusCode.OK or o.code in BAD_INPUT_CODES:
        return
    if o.code == grpc.StatusCode.UNAVAILABLE and name.startswith("master") \
            and o.details.startswith(("this master is not the leader",
                                      "the leader is still collecting chunkserver reports")):
        return                          # a follower sends every caller to the leader first; a
                                        # new leader asks for a retry until it knows the servers
    if o.code == grpc.StatusCode.UNAVAILABLE and method.name in ("WriteChunk", "CopyChunk"):
        return                          # the request named other servers, which did not answer
    if o.code == grpc.StatusCode.DATA_LOSS and (
            (method.name == "WriteChunk" and "expected" in o.details)
            or (method.name == "CopyChunk" and "does not match" in o.details)
            or (method.name == "PutInline" and "do not match their checksum" in o.details)):
        return                          # the bytes are not what the request declared (a server
                                        # cannot tell a lying request from damage in transit)
    pytest.fail(f"{name} {method.name}: {o.code.name}: {o.details}")


class Tally:
    """The cluster under fuzz, its seed chunk, and what was sent to each daemon since it
    started, with the number of lines each daemon's log had then."""

    def __init__(self, cluster, seed):
        self.cluster = cluster
        self.seed = {"handle": seed.handle, "version": seed.version, "length": seed.length}
        self.sent: collections.Counter = collections.Counter()
        self.lines = {name: len(lines) for name, lines in log_lines(cluster).items()}


def log_lines(cluster) -> dict[str, list[bytes]]:
    return {d["name"]: (Path(d["data"]) / "daemon.log").read_bytes().splitlines()
            for d in cluster.daemons()}


def _from_request_path(line: bytes) -> bool:
    """Written while serving a request (the services, grpc), or not a JSON log line at all
    (e.g. something printed to stderr): not one of the daemons' background loops."""
    try:
        logger = json.loads(line).get("logger", "")
    except ValueError:
        return True
    return logger.endswith(".service") or logger.startswith("grpc") or logger.startswith("gfs.")


@pytest.fixture(scope="module")
def fuzz_cluster(make_module_cluster):
    cluster = make_module_cluster(masters=3, options=OPTS, start=False)
    for _ in range(2):
        cluster.add_chunkserver()
    cluster.up()
    with cluster.client() as c:
        info = c.put(io.BytesIO(b"s" * 5000), "/seed", replication=2)
    return Tally(cluster, info.chunks[0])


CALLERS = ["admin", "anonymous", "garbage-token"]


def caller_metadata(tally: Tally, caller: str) -> tuple:
    """gRPC metadata of a caller: the cluster administrator's token (which gets furthest into
    the handlers), none, or a token that is no token."""
    return {"admin": bearer(tally.cluster.admin_token), "anonymous": (),
            "garbage-token": bearer("gfs_" + "x" * 40)}[caller]


def _watched(tally: Tally, caller: str):
    """A Fuzzer; afterwards checks, for every daemon: no traceback in its log; at most one line
    per request it received from the services and grpc during the test, and at most one line
    per request it received since the cluster started from anything (background loops, such
    as the repair of a replica a fuzz request deleted, log on their own schedule); still
    running."""
    f = Fuzzer(tally.cluster, caller_metadata(tally, caller))
    f.seed = tally.seed
    f.caller = caller
    before = log_lines(tally.cluster)
    yield f
    f.close()
    tally.sent.update(f.sent)
    after = log_lines(tally.cluster)
    for name in after:
        added = after[name][len(before[name]):]
        assert not any(b"Traceback" in line for line in added), f"{name}: {added}"
        served = [line for line in added if _from_request_path(line)]
        assert len(served) <= f.sent[name], \
            f"{name}: {len(served)} log lines for {f.sent[name]} requests: {served[:3]}"
        total = len(after[name]) - tally.lines[name]
        assert total <= tally.sent[name], \
            f"{name}: {total} log lines for {tally.sent[name]} requests: {added[:3]}"
        assert tally.cluster.pid(name), f"{name} is not running"


@pytest.fixture(params=CALLERS)
def any_caller(fuzz_cluster, request):
    """A watched Fuzzer for each kind of caller: what credentials change is how far a request
    gets, never whether its answer is clear."""
    yield from _watched(fuzz_cluster, request.param)


@pytest.fixture
def fuzzer(fuzz_cluster):
    """A watched Fuzzer calling as the administrator (past every permission check)."""
    yield from _watched(fuzz_cluster, "admin")


def _masters(cluster) -> list[str]:
    return [m["name"] for m in cluster.spec["masters"]]


def _chunkservers(cluster) -> list[str]:
    return [c["name"] for c in cluster.spec["chunkservers"]]


def _plausible(method: Method) -> bytes:
    """A message of the method's type with every scalar field set (to be cut short)."""
    msg = method.request()
    for f in msg.DESCRIPTOR.fields:
        if f.is_repeated or f.type == f.TYPE_MESSAGE:
            continue
        value = {f.TYPE_STRING: "/some/path", f.TYPE_BYTES: b"0123456789abcdef",
                 f.TYPE_BOOL: True, f.TYPE_DOUBLE: 0.5, f.TYPE_FLOAT: 0.5}.get(f.type, 300)
        setattr(msg, f.name, value)
    return msg.SerializeToString()


def test_random_and_truncated_bodies_get_invalid_argument(any_caller):
    """Bodies that are not messages of the method's type: as the administrator to every
    daemon, as the other callers to the leader and one chunkserver."""
    fuzzer = any_caller
    rng = random.Random()
    masters, chunkservers = _masters(fuzzer.cluster), _chunkservers(fuzzer.cluster)
    if fuzzer.caller != "admin":
        masters, chunkservers = [fuzzer.leader()], chunkservers[:1]
    targets = [(n, MASTER_METHODS) for n in masters] + \
        [(n, CHUNKSERVER_METHODS) for n in chunkservers]
    for name, methods in targets:
        for m in methods:
            bodies = [b"\xff" * 8, b"\x0a\xff\xff\xff\xff\x0f", b"\x12\x05ab"]     # bad tag,
            bodies += [rng.randbytes(rng.randrange(1, 300)) for _ in range(RANDOM_BODIES)]
            bodies += truncations(_plausible(m))            # length past end, cut field
            for body in bodies:
                fuzzer.send(name, m, [body])
            if m.name == "Calls":                           # a good batch, then junk
                o = fuzzer.send(name, m, [pb.CallBatch().SerializeToString(), b"\xff\xff\xff"])
                assert o.code == grpc.StatusCode.INVALID_ARGUMENT, o
            if m.name == "WriteChunk":                      # a good first message, then junk
                first = cpb.WriteRequest(header=cpb.WriteHeader(handle=1 << 60, version=1))
                o = fuzzer.send(name, m, [first.SerializeToString(), b"\xff\xff\xff"])
                # no capability for that chunk: refused before the junk is read
                assert o.code == grpc.StatusCode.UNAUTHENTICATED, o
                header = write_header(fuzzer, name)
                o = fuzzer.send(name, m, [header.SerializeToString(), b"\xff\xff\xff"])
                assert o.code == grpc.StatusCode.INVALID_ARGUMENT, o


def write_header(fuzzer, chunkserver: str) -> cpb.WriteRequest:
    """The first message of a chunk write the masters allowed: a pending upload's chunk on
    `chunkserver`, with its write capability."""
    others = [fuzzer.address(n) for n in _chunkservers(fuzzer.cluster) if n != chunkserver]
    with fuzzer.cluster.client() as c:
        inode = c.create(f"/fuzz-upload-{random.randrange(1 << 30)}", replication=1)
        alloc = c.add_chunk(inode, 0, exclude=others)      # placed on `chunkserver`
    assert list(alloc.replicas) == [fuzzer.address(chunkserver)]
    return cpb.WriteRequest(header=cpb.WriteHeader(
        handle=alloc.handle, version=alloc.version, capability=alloc.capability))


def read_capability(fuzzer) -> bytes:
    """A fresh read capability for the seed chunk (they expire)."""
    with fuzzer.cluster.client() as c:
        return c.stat("/seed", for_read=True).chunks[0].capability


def signed(fuzzer, method, body: bytes) -> list:
    """Daemon-signed call metadata, as only a holder of the cluster secret can make."""
    return [DaemonAuth(fuzzer.cluster.cluster_secret()).sign(method.path, body)]


def test_truncated_and_garbage_bodies_are_named(fuzzer):
    """The status names the method and the message type it could not decode."""
    leader = fuzzer.leader()
    mkdir = next(m for m in MASTER_METHODS if m.name == "Mkdir")
    o = fuzzer.send(leader, mkdir, [b"\x12\x40/short"])
    assert o.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "Mkdir" in o.details and "gfs.master.MkdirRequest" in o.details, o.details
    read = next(m for m in CHUNKSERVER_METHODS if m.name == "ReadChunk")
    o = fuzzer.send("chunkserver-1", read, [b"\x08"])
    assert o.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "gfs.chunkserver.ReadRequest" in o.details, o.details


def test_unknown_methods_are_unimplemented(fuzzer):
    for name, service in [(fuzzer.leader(), "gfs.master.Master"),
                          ("chunkserver-1", "gfs.chunkserver.Chunkserver")]:
        nope = Method(f"/{service}/Nope", "Nope", pb.Empty, False, False)
        fuzzer.sent[name] += 1
        o = call_raw(fuzzer.channel(name), nope, [b"\x08\x01"], metadata=fuzzer.metadata)
        assert o.code == grpc.StatusCode.UNIMPLEMENTED, o


def test_read_chunk_ranges(fuzzer):
    """Reads of a real chunk outside its bytes are refused with INVALID_ARGUMENT."""
    read = next(m for m in CHUNKSERVER_METHODS if m.name == "ReadChunk")
    h, v, n = fuzzer.seed["handle"], fuzzer.seed["version"], fuzzer.seed["length"]
    cap = read_capability(fuzzer)
    holder = next(name for name in _chunkservers(fuzzer.cluster)
                  if fuzzer.send(name, read, [cpb.ReadRequest(
                      handle=h, version=v, length=1, capability=cap).SerializeToString()]).code
                  == grpc.StatusCode.OK)
    for offset, length in [(n + 1, -1), ((1 << 64) - 1, 1), (0, -2), (0, -(1 << 63)),
                           (0, (1 << 63) - 1), (n - 1, 2)]:
        o = fuzzer.send(holder, read, [cpb.ReadRequest(handle=h, version=v, offset=offset,
                                                       length=length,
                                                       capability=cap).SerializeToString()])
        assert o.code == grpc.StatusCode.INVALID_ARGUMENT, (offset, length, o)


@pytest.mark.parametrize("method", MASTER_METHODS, ids=lambda m: m.name)
def test_master_hostile_messages(any_caller, method):
    """Well-formed messages with edge-value fields, at the leader and at a follower."""
    fuzzer = any_caller
    leader = fuzzer.leader()
    follower = next(n for n in _masters(fuzzer.cluster) if n != leader)

    @FUZZ_SETTINGS
    @given(msg=hostile_messages(method.request), to_leader=st.booleans())
    def run(msg, to_leader):
        fuzzer.send(leader if to_leader else follower, method, [msg.SerializeToString()])
    run()


@pytest.mark.parametrize("method", CHUNKSERVER_METHODS, ids=lambda m: m.name)
def test_chunkserver_hostile_messages(fuzzer, method):
    """Well-formed messages with edge-value fields; handles are the seed file's chunk or far
    above anything allocated, so that the file written at the end is not disturbed."""
    seed = fuzzer.seed
    other = fuzzer.address("chunkserver-2")
    overrides = {
        "handle": st.sampled_from([seed["handle"], (1 << 64) - 1, 1 << 63])
        | st.integers(1 << 40, (1 << 64) - 1),
        "version": st.sampled_from([0, 1, seed["version"], seed["version"] + 1, (1 << 64) - 1]),
        "offset": st.sampled_from([0, 1, 65535, 65536, seed["length"], seed["length"] + 1,
                                   (1 << 64) - 1]),
        "length": st.sampled_from([-1, -2, -(1 << 63), 0, 1, seed["length"],
                                   seed["length"] + 1, (1 << 63) - 1])
        if method.name == "ReadChunk" else st.sampled_from([0, 1, seed["length"], 1 << 40]),
        "chain": st.sampled_from([other, "127.0.0.1:1", "", "nohost", "127.0.0.1:0"]),
        "sources": st.sampled_from([other, "127.0.0.1:1", "", ":1", "[::1]:x"]),
        "max_bytes_per_s": st.sampled_from([0, 1 << 30]),
    }

    @FUZZ_SETTINGS
    @given(msg=hostile_messages(method.request, overrides),
           pieces=st.lists(st.binary(max_size=100), max_size=3))
    def run(msg, pieces):
        bodies = [msg.SerializeToString()]
        if method.client_streaming:
            bodies += [cpb.WriteRequest(data=p).SerializeToString() for p in pieces]
        fuzzer.send("chunkserver-1", method, bodies)
    run()


def test_heartbeat_and_copy_addresses_are_checked(fuzzer):
    """An address that is not HOST:PORT is refused before anything is recorded or dialled."""
    leader = fuzzer.leader()
    beat = next(m for m in MASTER_METHODS if m.name == "Heartbeat")

    def send_signed(name, method, body: bytes):
        fuzzer.sent[name] += 1
        return call_raw(fuzzer.channel(name), method, [body],
                        metadata=signed(fuzzer, method, body))

    for address in ["", "nohost", "127.0.0.1:0", "127.0.0.1:70000", "a b:1", "/x:1"]:
        body = pb.HeartbeatRequest(address=address).SerializeToString()
        assert fuzzer.send(leader, beat, [body]).code == grpc.StatusCode.UNAUTHENTICATED
        o = send_signed(leader, beat, body)
        assert o.code == grpc.StatusCode.INVALID_ARGUMENT and "address" in o.details, o
    o = send_signed(leader, beat, pb.HeartbeatRequest(
        address="127.0.0.1:1", io_load=float("nan")).SerializeToString())
    assert o.code == grpc.StatusCode.INVALID_ARGUMENT and "io_load" in o.details, o
    copy = next(m for m in CHUNKSERVER_METHODS if m.name == "CopyChunk")
    o = send_signed("chunkserver-1", copy, cpb.CopyRequest(
        handle=1 << 50, version=1, sources=["evil host:1"]).SerializeToString())
    assert o.code == grpc.StatusCode.INVALID_ARGUMENT and "sources" in o.details, o


def test_oversized_messages_get_resource_exhausted(fuzzer):
    """A message over the daemon's receive limit, for every method (for the chunk write
    stream: a good header, then an oversized piece)."""
    leader = fuzzer.leader()
    too_big = oversized_body(MASTER_MAX + 1024)
    for m in MASTER_METHODS:
        o = fuzzer.send(leader, m, [too_big])
        assert o.code == grpc.StatusCode.RESOURCE_EXHAUSTED, (m.name, o)
    too_big = oversized_body(CHUNKSERVER_MAX + 1024)
    for m in CHUNKSERVER_METHODS:
        o = fuzzer.send("chunkserver-1", m, [too_big])
        assert o.code == grpc.StatusCode.RESOURCE_EXHAUSTED, (m.name, o)
    write = next(m for m in CHUNKSERVER_METHODS if m.name == "WriteChunk")
    header = write_header(fuzzer, "chunkserver-1")
    big = cpb.WriteRequest(data=b"x" * (CHUNKSERVER_MAX + 1024))
    o = fuzzer.send("chunkserver-1", write, [header.SerializeToString(), big.SerializeToString()])
    assert o.code == grpc.StatusCode.RESOURCE_EXHAUSTED, o


def test_cluster_serves_after_the_fuzz(fuzzer, tmp_path):
    """Every daemon still runs and a normal put and get work."""
    fuzzer.cluster.wait_healthy(30)
    data = random.randbytes(3 * (1 << 20) + 77)
    with fuzzer.cluster.client() as c:
        c.put(io.BytesIO(data), "/after-fuzz", replication=2)
        assert c.read("/after-fuzz") == data
