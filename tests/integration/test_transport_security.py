"""Daemons authenticate each other and chunkservers trust no caller's word, with real daemons:
forged heartbeats and forged copy/delete/move orders change nothing (replica map and disks
compared before and after); reads and writes without a valid capability are refused with a
precise status; key rotation keeps the cluster serving."""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import grpc
import pytest

from gfs.auth.capability import SIZE as CAPABILITY_SIZE
from gfs.auth.daemon import DaemonAuth
from gfs.auth.tokens import bearer
from gfs.client import Client
from gfs.transfer import Channels
from polling import wait_for
from raw_chunks import read_replica
from proto import chunkserver_pb2 as cpb
from proto import chunkserver_pb2_grpc as cpb_grpc
from proto import master_pb2 as pb
from proto import master_pb2_grpc as pb_grpc
from small_cluster import small_cluster

CHUNK = 1 << 20
OPTIONS = {"master": {"election-timeout": 0.3, "chunk-size": "1MiB", "dead-after": 3,
                      "gc-grace": 2, "capability-ttl": 3},
           "chunkserver": {"heartbeat-interval": 0.3}}


@pytest.fixture(scope="module")
def cluster(make_module_cluster):
    return small_cluster(make_module_cluster, OPTIONS)


def disk_state(cluster) -> dict[str, str]:
    """Every chunk file of every chunkserver (both tiers) -> SHA-256 of its content."""
    out = {}
    for cs in cluster.spec["chunkservers"]:
        for f in sorted(Path(cs["data"]).rglob("*.chunk")):
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def replica_map(client: Client, paths: list[str]) -> tuple:
    servers = sorted((s["address"], s["alive"], s["chunk_count"], s["corrupt_replicas"])
                     for s in client.chunkservers())
    chunks = sorted((c.handle, c.version, tuple(sorted(c.replicas)))
                    for p in paths for c in client.stat(p).chunks)
    return servers, chunks


def code_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        result = call()
        if hasattr(result, "__iter__") and not hasattr(result, "SerializeToString"):
            list(result)                      # a server stream fails when read
    return err.value.code(), err.value.details()


def test_forged_heartbeats_and_orders_change_nothing(cluster):
    with cluster.client() as c:
        data = {f"/keep{i}": os.urandom(CHUNK + 1000 * i) for i in range(2)}
        for path, body in data.items():
            c.put(io.BytesIO(body), path, replication=3)
        chunks = sum(len(c.stat(p).chunks) for p in data)
        wait_for(lambda: all(s["chunk_count"] == chunks for s in c.chunkservers()), 10,
                 "every server to report its chunks")
        before_map, before_disk = replica_map(c, list(data)), disk_state(cluster)
        victim = cluster.spec["chunkservers"][0]["bind"]
        leader = cluster.master_addresses()[0]
        chunk = c.stat("/keep0").chunks[0]
        impostor = DaemonAuth(os.urandom(32))    # a process with a secret of its own

        # A heartbeat claiming the victim now holds nothing (a full report): the leader would
        # drop its replicas and re-replicate; one from a made-up server holding everything.
        lies = [pb.HeartbeatRequest(address=victim, full_report=True, instance="forged",
                                    sequence=1, capacity_bytes=1 << 30, free_bytes=1 << 30),
                pb.HeartbeatRequest(address="127.0.0.1:1", full_report=True, instance="x",
                                    sequence=1, capacity_bytes=1 << 40, free_bytes=1 << 40,
                                    added=[pb.ChunkReport(handle=chunk.handle,
                                                          version=chunk.version + 1,
                                                          length=chunk.length)])]
        with grpc.insecure_channel(leader) as ch:
            master = pb_grpc.MasterStub(ch)
            for lie in lies:
                for metadata in (None, [impostor.sign("/gfs.master.Master/Heartbeat",
                                                      lie.SerializeToString())],
                                 [("gfs-daemon-auth", "1.00.00")]):
                    code, details = code_of(lambda: master.Heartbeat(lie, metadata=metadata,
                                                                     timeout=5))
                    assert code == grpc.StatusCode.UNAUTHENTICATED, details
            # A client's bad-replica reports only ever queue a verification of what is held.
            for h in (chunk.handle, 12345):
                master.ReportBadReplica(pb.BadReplicaRequest(handle=h, version=chunk.version,
                                                             address=victim, reason="lie"),
                                        timeout=5)

        orders = [("DeleteChunk", cpb.DeleteRequest(handle=chunk.handle, version=0)),
                  ("CopyChunk", cpb.CopyRequest(handle=chunk.handle, version=chunk.version + 1,
                                                sources=["127.0.0.1:1"], length=10)),
                  ("MoveChunk", cpb.MoveRequest(handle=chunk.handle, tier="cold"))]
        for address in cluster.chunkserver_addresses():
            with grpc.insecure_channel(address) as ch:
                stub = cpb_grpc.ChunkserverStub(ch)
                for name, request in orders:
                    for metadata in (None, [impostor.sign(
                            f"/gfs.chunkserver.Chunkserver/{name}", request.SerializeToString())]):
                        code, details = code_of(lambda: getattr(stub, name)(
                            request, metadata=metadata, timeout=10))
                        assert code == grpc.StatusCode.UNAUTHENTICATED, (name, details)

        time.sleep(2.0)                          # several heartbeats and leader loop passes
        assert replica_map(c, list(data)) == before_map
        assert disk_state(cluster) == before_disk
        for path, body in data.items():
            assert c.read(path) == body

        # Control: the same order signed with the cluster's secret is obeyed (so the refusals
        # above are the signature check, not a malformed request).
        with closing(Channels(DaemonAuth(cluster.cluster_secret()))) as channels:
            resp = channels.stub(victim).DeleteChunk(cpb.DeleteRequest(handle=99999, version=0),
                                                     timeout=5)
            assert resp.deleted is False



def write_raw(address: str, handle: int, version: int, capability: bytes, data: bytes):
    def requests():
        yield cpb.WriteRequest(header=cpb.WriteHeader(handle=handle, version=version,
                                                      capability=capability))
        yield cpb.WriteRequest(data=data)
    with grpc.insecure_channel(address) as ch:
        return cpb_grpc.ChunkserverStub(ch).WriteChunk(requests(), timeout=10)


def refused(call) -> tuple[str, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code().name, err.value.details()


def test_reads_and_writes_need_a_valid_capability(cluster):
    with cluster.client() as c:
        body, other = os.urandom(CHUNK // 2), os.urandom(1000)
        c.put(io.BytesIO(body), "/cap", replication=1)
        c.put(io.BytesIO(other), "/other", replication=1)
        chunk, their = (c.stat("/cap", for_read=True).chunks[0],
                        c.stat("/other", for_read=True).chunks[0])
        address, h, v = chunk.replicas[0], chunk.handle, chunk.version
        assert len(chunk.capability) == CAPABILITY_SIZE
        assert read_replica(address, h, v, chunk.capability) == body       # the valid one works
        forged = chunk.capability[:-32] + os.urandom(32)
        unsigned_longer = chunk.capability[:-32] + bytes(32)
        # a capability for other expiry, signed by nobody: the 30-byte body edited
        extended = chunk.capability[:22] + (2 ** 62).to_bytes(8, "big") + chunk.capability[30:]
        cases = {
            "none": (b"", v, "UNAUTHENTICATED", "needs a capability"),
            "garbage": (os.urandom(10), v, "UNAUTHENTICATED", "malformed"),
            "forged tag": (forged, v, "UNAUTHENTICATED", "does not verify"),
            "zero tag": (unsigned_longer, v, "UNAUTHENTICATED", "does not verify"),
            "extended expiry": (extended, v, "UNAUTHENTICATED", "does not verify"),
            "other handle": (their.capability, v, "PERMISSION_DENIED", "is for read of chunk"),
            "other version": (chunk.capability, v + 1, "PERMISSION_DENIED", "is for read"),
        }
        for name, (cap, version, code, words) in cases.items():
            got = refused(lambda: read_replica(address, h, version, cap))
            assert got[0] == code and words in got[1], (name, got)

        # Writes: none, forged, a read capability, the write capability of another version.
        before = disk_state(cluster)
        alloc = c.add_chunk(c.create("/upload"), 0)
        wa, wh, wv = alloc.replicas[0], alloc.handle, alloc.version
        write_cases = {
            "none": (b"", wv, "UNAUTHENTICATED"),
            "forged": (alloc.capability[:-32] + os.urandom(32), wv, "UNAUTHENTICATED"),
            "read capability": (chunk.capability, v, "PERMISSION_DENIED"),
            "other version": (alloc.capability, wv + 1, "PERMISSION_DENIED"),
            "other handle": (alloc.capability, h, "PERMISSION_DENIED"),
        }
        for name, (cap, version, code) in write_cases.items():
            handle = h if name in ("read capability", "other handle") else wh
            got = refused(lambda: write_raw(wa, handle, version, cap, b"evil" * 100))
            assert got[0] == code, (name, got)
        assert disk_state(cluster) == before     # nothing was stored, nothing replaced
        assert write_raw(wa, wh, wv, alloc.capability, b"ok").length == 2

        # Expired: the masters here sign for 3 s.
        longer = os.urandom(2 * CHUNK + 77)
        c.put(io.BytesIO(longer), "/cap-longer", replication=1)
        held = c.stat("/cap-longer", for_read=True)
        time.sleep(3.5)
        got = refused(lambda: read_replica(address, h, v, chunk.capability))
        assert got[0] == "UNAUTHENTICATED" and "expired" in got[1], got
        assert c.read("/cap") == body            # a fresh stat brings a fresh capability
        # A download holding expired capabilities asks for a fresh one chunk by chunk.
        assert c.read_at(held, CHUNK - 5, CHUNK + 10) == longer[CHUNK - 5:2 * CHUNK + 5]


def test_rotated_out_keys_are_refused_and_rotation_keeps_serving(cluster):
    with cluster.client() as c:
        body = os.urandom(CHUNK + 5)
        c.put(io.BytesIO(body), "/rot", replication=3)
        old = c.stat("/rot", for_read=True).chunks[0]
        with grpc.insecure_channel(cluster.master_addresses()[0]) as ch:
            master = pb_grpc.MasterStub(ch)
            first = master.RotateKeys(pb.Empty(), timeout=10,
                                      metadata=bearer(cluster.admin_token)).key_id
            # Right after a rotation the old key still signs and is accepted everywhere.
            assert c.read("/rot") == body
            assert read_replica(old.replicas[0], old.handle, old.version, old.capability) == \
                body[:old.length]
        out = subprocess.run([sys.executable, "-m", "cli.main", "admin", "rotate-keys", "--json"],
                             capture_output=True, text=True, timeout=60, env=cluster.cli_env())
        assert out.returncode == 0, out.stderr
        second = json.loads(out.stdout)["key_id"]
        assert second == first + 1
        time.sleep(1.0)                          # the servers hear the keys (0.3 s heartbeats)
        for address in old.replicas:
            got = refused(lambda: read_replica(address, old.handle, old.version, old.capability))
            assert got[0] == "UNAUTHENTICATED" and "rotated out" in got[1], got
        # The cluster keeps serving through both rotations: reads and writes.
        assert c.read("/rot") == body
        c.put(io.BytesIO(body), "/rot2", replication=3)
        assert c.read("/rot2") == body
