"""The machine's own limits, measured in the same run as the benchmarks they are compared with:
raw disk sequential write (with fdatasync), read, and copy (read and write at once), the fsync rate, loopback TCP throughput
and round trips, and the CPU a single Python process spends moving a GiB through the kernel.
"""
from __future__ import annotations

import os
import resource
import socket
import threading
import time
from pathlib import Path

from bench.common import MB, PIECE, GiB, fsync_ceiling, spread

RTT_MESSAGE = 4096


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def evict(path: str | os.PathLike) -> None:
    """Drop a file's (or every file under a directory's) clean pages from the page cache."""
    root = Path(path)
    for p in [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]:
        try:
            fd = os.open(p, os.O_RDONLY)
        except FileNotFoundError:                     # removed meanwhile
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _read_all(path: str) -> None:
    buf = bytearray(PIECE)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


def _timed(size: int, fn) -> tuple[float, float]:
    """(MB/s, CPU seconds per GiB) of `fn` moving `size` bytes."""
    cpu, t = _cpu_s(), time.perf_counter()
    fn()
    wall, cpu = time.perf_counter() - t, _cpu_s() - cpu
    return size / wall / MB, cpu * GiB / size


def raw_disk(directory: str, size: int) -> dict:
    """Sequential write (1 MiB os.writes + one fdatasync), cold read and warm read, MB/s."""
    path = os.path.join(directory, ".datapath-probe")
    piece = os.urandom(PIECE)

    def write() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for _ in range(size // PIECE):
                os.write(fd, piece)
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def copy() -> None:
        """A cold read of the file and a write of its bytes to another, made durable: what a
        download to a file on the same disk asks of it (a read and a write of every byte)."""
        buf = bytearray(PIECE)
        fd = os.open(path + ".copy", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with open(path, "rb", buffering=0) as f:
                while n := f.readinto(buf):
                    os.write(fd, memoryview(buf)[:n])
            os.fdatasync(fd)
        finally:
            os.close(fd)

    try:
        w, w_cpu = _timed(size, write)
        evict(path)
        cold, _ = _timed(size, lambda: _read_all(path))
        warm, _ = _timed(size, lambda: _read_all(path))
        evict(path)
        copied, _ = _timed(size, copy)
    finally:
        os.unlink(path)
        if os.path.exists(path + ".copy"):
            os.unlink(path + ".copy")
    return {"write": w, "cold_read": cold, "warm_read": warm, "copy": copied,
            "write_cpu_s_per_gib": w_cpu}


def _loopback(size: int) -> tuple[float, float]:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        got = [0]

        def receive() -> None:
            conn, _ = srv.accept()
            buf = bytearray(PIECE)
            with conn:
                while n := conn.recv_into(buf):
                    got[0] += n

        rx = threading.Thread(target=receive)
        rx.start()
        piece = os.urandom(PIECE)

        def send() -> None:
            with socket.create_connection(srv.getsockname()) as s:
                for _ in range(size // PIECE):
                    s.sendall(piece)
            rx.join()

        return _timed(size, send)


def loopback_tcp(size: int) -> float:
    """MB/s of `size` bytes sent in 1 MiB sends over one 127.0.0.1 connection."""
    return _loopback(size)[0]


def loopback_rtt(seconds: float, message: int = RTT_MESSAGE) -> dict:
    """Request/response round trips per second of `message`-byte messages between two Python
    threads over one 127.0.0.1 connection: the floor of any small RPC on this machine."""
    lat: list[float] = []
    with socket.create_server(("127.0.0.1", 0)) as srv:
        def echo() -> None:
            conn, _ = srv.accept()
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buf = bytearray(message)
                while True:
                    n = 0
                    while n < message:
                        k = conn.recv_into(memoryview(buf)[n:])
                        if not k:
                            return
                        n += k
                    conn.sendall(buf)

        t = threading.Thread(target=echo, daemon=True)
        t.start()
        payload, buf = os.urandom(message), bytearray(message)
        with socket.create_connection(srv.getsockname()) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                s.sendall(payload)
                n = 0
                while n < message:
                    n += s.recv_into(memoryview(buf)[n:])
                lat.append(time.perf_counter() - t0)
        t.join(timeout=5)
    lat.sort()
    return {"ops_s": len(lat) / seconds, "p50_ms": lat[len(lat) // 2] * 1e3}


def measure(directory: str, disk_size: int, fsync_seconds: float, reps: int) -> dict:
    """Every reference, each repeated `reps` times: median and min–max."""
    disk = [raw_disk(directory, disk_size) for _ in range(reps)]
    fs = [fsync_ceiling(directory, fsync_seconds) for _ in range(reps)]
    tcp = [_loopback(disk_size) for _ in range(reps)]
    rtt = [loopback_rtt(fsync_seconds) for _ in range(reps)]
    return {
        "disk_size": disk_size,
        "disk_write_mb_s": spread([d["write"] for d in disk]),
        "disk_cold_read_mb_s": spread([d["cold_read"] for d in disk]),
        "disk_warm_read_mb_s": spread([d["warm_read"] for d in disk]),
        "disk_copy_mb_s": spread([d["copy"] for d in disk]),
        "fsync_ops_s": spread([f["ops_s"] for f in fs]),
        "fsync_p50_ms": spread([f["p50_ms"] for f in fs]),
        "loopback_tcp_mb_s": spread([t[0] for t in tcp]),
        "loopback_rtt_ops_s": spread([r["ops_s"] for r in rtt]),
        "loopback_rtt_p50_ms": spread([r["p50_ms"] for r in rtt]),
        "disk_write_cpu_s_per_gib": spread([d["write_cpu_s_per_gib"] for d in disk]),
        "loopback_cpu_s_per_gib": spread([t[1] for t in tcp]),
    }


ROWS = [  # key, what, unit
    ("disk_write_mb_s", "raw disk sequential write (1 MiB writes + fdatasync)", "MB/s"),
    ("disk_cold_read_mb_s", "raw disk sequential read, cold (after FADV_DONTNEED)", "MB/s"),
    ("disk_warm_read_mb_s", "raw disk sequential read, warm (page cache)", "MB/s"),
    ("disk_copy_mb_s", "raw disk copy: cold read + write of another file + fdatasync", "MB/s"),
    ("fsync_ops_s", "fsync rate (200 B append + fdatasync)", "ops/s"),
    ("loopback_tcp_mb_s", "loopback TCP throughput (1 MiB sends)", "MB/s"),
    ("loopback_rtt_ops_s", f"loopback TCP round trips ({RTT_MESSAGE} B each way)", "ops/s"),
    ("disk_write_cpu_s_per_gib", "CPU of one process writing to disk", "CPU s/GiB"),
    ("loopback_cpu_s_per_gib", "CPU of one process sending + receiving on loopback", "CPU s/GiB"),
]
