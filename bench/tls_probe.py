"""What TLS alone costs a gRPC stream on this machine: one process serves a ReadChunk-shaped
stream of 1 MiB messages on a plaintext port and on a TLS port (a certificate from a local CA,
as `gfs cluster up --tls` makes), reads it back through each, alternately, and times both.
No gfs code is on the path: this is the floor TLS sets for any one hop of the data path."""
from __future__ import annotations

import os
import resource
import time
from concurrent import futures

import grpc

from bench.common import GiB, MB, PIECE, spread
from gfs.auth.tls import TlsFiles, channel_credentials, make_local_ca
from proto import chunkserver_pb2 as cpb
from proto import chunkserver_pb2_grpc as cpb_grpc

OPTIONS = [("grpc.max_send_message_length", 64 << 20),
           ("grpc.max_receive_message_length", 64 << 20)]


class _Stream(cpb_grpc.ChunkserverServicer):
    def __init__(self, pieces: int):
        self.pieces = pieces
        self.data = os.urandom(PIECE)

    def ReadChunk(self, request, context):
        for _ in range(self.pieces):
            yield cpb.ReadResponse(data=self.data)


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def measure(work: str, size: int = 256 << 20, reps: int = 3) -> dict:
    """{"plain"|"tls": {"mb_s": spread, "cpu_s_per_gib": spread}} (CPU of both ends: one
    process), reps interleaved."""
    tls = TlsFiles(**vars(make_local_ca(os.path.join(work, "tls-probe"), ["127.0.0.1"])))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=OPTIONS)
    cpb_grpc.add_ChunkserverServicer_to_server(_Stream(max(1, size // PIECE)), server)
    plain_port = server.add_insecure_port("127.0.0.1:0")
    tls_port = server.add_secure_port("127.0.0.1:0", tls.server_credentials())
    server.start()
    channels = {"plain": grpc.insecure_channel(f"127.0.0.1:{plain_port}", OPTIONS),
                "tls": grpc.secure_channel(f"127.0.0.1:{tls_port}",
                                           channel_credentials(tls.ca_pem()), OPTIONS)}
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in channels}
    try:
        for rep in range(reps + 1):                     # the first round warms up
            for name in (list(channels) if rep % 2 else list(reversed(channels))):
                stub = cpb_grpc.ChunkserverStub(channels[name])
                cpu, t = _cpu_s(), time.perf_counter()
                n = sum(len(r.data) for r in stub.ReadChunk(cpb.ReadRequest(), timeout=300))
                wall, used = time.perf_counter() - t, _cpu_s() - cpu
                if rep:
                    runs[name].append((n / wall / MB, used * GiB / n))
    finally:
        for ch in channels.values():
            ch.close()
        server.stop(grace=None)
    return {name: {"mb_s": spread([r[0] for r in rs]), "cpu_s_per_gib": spread([r[1] for r in rs])}
            for name, rs in runs.items()}
