"""Data-path benchmark: put/get throughput of real client processes against 3 masters and
3 chunkservers, beside the machine's raw disk and loopback TCP rates measured in the same run,
and the peak RSS of every process.

    ./run.sh bench datapath [--size 1GiB] [--reps 3] [--clients 1,4] [--replication 1,3]
                            [--data DIR]

Each client process puts (or gets) its own whole file of --size; MB/s is aggregate
(all clients' bytes / wall time), 1 MB = 10^6 bytes. Before every get the chunk files are
evicted from the page cache, so gets read the disk like the raw cold read does.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import xxhash

from bench.common import median, process_table, save_results, table

PIECE = 1 << 20
MB = 1e6


# --- physical references -------------------------------------------------------------------

def evict(path: str | os.PathLike) -> None:
    """Drop a file's (or every file under a directory's) clean pages from the page cache."""
    root = Path(path)
    for p in [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _read_all(path: str) -> None:
    buf = bytearray(PIECE)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


def _timed_mb_s(size: int, fn) -> float:
    t = time.perf_counter()
    fn()
    return size / (time.perf_counter() - t) / MB


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

    try:
        w = _timed_mb_s(size, write)
        evict(path)
        cold = _timed_mb_s(size, lambda: _read_all(path))
        warm = _timed_mb_s(size, lambda: _read_all(path))
    finally:
        os.unlink(path)
    return {"write": w, "cold_read": cold, "warm_read": warm}


def loopback_tcp(size: int) -> float:
    """MB/s of `size` bytes sent in 1 MiB sends over one 127.0.0.1 connection."""
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
        t = time.perf_counter()
        with socket.create_connection(srv.getsockname()) as s:
            for _ in range(size // PIECE):
                s.sendall(piece)
        rx.join()
        return got[0] / (time.perf_counter() - t) / MB


# --- files ---------------------------------------------------------------------------------

def file_hash(path: str) -> int:
    h = xxhash.xxh3_64()
    buf = bytearray(PIECE)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(memoryview(buf)[:n])
    return h.intdigest()


def make_source(directory: str, size: int) -> tuple[str, int]:
    """A file of `size` random bytes written piece by piece; returns (path, xxh3_64)."""
    path = os.path.join(directory, "source.bin")
    h = xxhash.xxh3_64()
    with open(path, "wb", buffering=0) as f:
        for pos in range(0, size, PIECE):
            piece = os.urandom(min(PIECE, size - pos))
            h.update(piece)
            f.write(piece)
    return path, h.intdigest()


# --- client processes ----------------------------------------------------------------------

def _client(masters, op, remote, local, digest, replication, barrier, out):
    import resource
    from gfs.client import Client
    error = ""
    with Client(masters, deadline=60) as c:
        c.stat("/bench")                      # connect and find the leader before the clock
        barrier.wait()
        try:
            if op == "put":
                c.put(local, remote, replication=replication)
            else:
                c.get(remote, local)
        except Exception as err:              # counted, and the first one is printed
            error = f"{type(err).__name__}: {err}"
        end = time.monotonic()
    if op == "get":
        if not error and file_hash(local) != digest:
            error = "downloaded bytes differ from the source"
        if os.path.exists(local):
            os.unlink(local)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out.put((end, error, ru.ru_maxrss * 1024, ru.ru_utime + ru.ru_stime))


def measure(masters: list[str], op: str, remotes: list[str], source: str, digest: int,
            replication: int, size: int, work: str) -> dict:
    """One put or get by len(remotes) client processes at once: aggregate MB/s of the clients
    that succeeded, errors, the clients' peak RSS and CPU seconds."""
    ctx = mp.get_context("spawn")
    barrier, q = ctx.Barrier(len(remotes) + 1), ctx.Queue()
    locals_ = [source if op == "put" else os.path.join(work, f"get-{i}.bin")
               for i in range(len(remotes))]
    ps = [ctx.Process(target=_client, args=(masters, op, r, l, digest, replication, barrier, q),
                      daemon=True) for r, l in zip(remotes, locals_)]
    for p in ps:
        p.start()
    barrier.wait(timeout=120)                 # broken if a client dies while starting
    start = time.monotonic()
    done = []
    while len(done) < len(ps):
        try:
            done.append(q.get(timeout=1))
        except queue.Empty:
            if any(p.exitcode for p in ps):
                raise RuntimeError(f"a {op} client process died") from None
    for p in ps:
        p.join()
    errors = [e for _, e, _, _ in done if e]
    if errors:
        print(f"    {op}: {len(errors)} error(s), first: {errors[0]}", flush=True)
    wall = max(end for end, _, _, _ in done) - start
    return {"mb_s": (len(remotes) - len(errors)) * size / wall / MB, "errors": len(errors),
            "client_rss": max(rss for _, _, rss, _ in done),
            "client_cpu_s": sum(cpu for _, _, _, cpu in done)}


def reclaim(client, path: str) -> None:
    """Delete a remote file for good and its chunk replicas at once (garbage collection would
    wait for its grace period, an hour by default, and the disk would fill up meanwhile)."""
    from gfs.transfer import Channels
    from proto import chunkserver_pb2 as cpb
    info = client.stat(path)
    client.delete(path, skip_trash=True)
    channels = Channels()
    try:
        for chunk in info.chunks:
            for address in chunk.replicas:
                channels.stub(address).DeleteChunk(
                    cpb.DeleteRequest(handle=chunk.handle, version=chunk.version), timeout=10)
    finally:
        channels.close()


def process_stats(pid: int | None) -> dict:
    """Peak RSS (VmHWM, bytes) and CPU seconds so far of a running process."""
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
        with open(f"/proc/{pid}/stat") as f:
            utime, stime = f.read().rsplit(")", 1)[1].split()[11:13]
    except (OSError, StopIteration, TypeError):
        return {"peak_rss": None, "cpu_s": None}
    return {"peak_rss": rss, "cpu_s": (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")}


def raft_term(cluster) -> int:
    statuses = [cluster.master_status(m) for m in cluster.spec["masters"]]
    return max(st["term"] if st else 0 for st in statuses)


# --- the benchmark -------------------------------------------------------------------------

def _summary(runs: list[float]) -> dict:
    return {"mb_s": median(runs), "mb_s_min": min(runs), "mb_s_max": max(runs)}


def physical(directory: str, size: int, reps: int) -> dict:
    disk = [raw_disk(directory, size) for _ in range(reps)]
    refs = {k: _summary([d[k] for d in disk]) for k in ("write", "cold_read", "warm_read")}
    return {**refs, "loopback_tcp": _summary([loopback_tcp(size) for _ in range(reps)])}


def put_then_get(cluster, client, remotes: list[str], replication: int, source: str,
                 digest: int, size: int, work: str) -> dict[str, dict]:
    """Put the source to every remote at once, get them all back cold, then delete them."""
    masters = cluster.master_addresses()
    put = measure(masters, "put", remotes, source, digest, replication, size, work)
    for cs in cluster.spec["chunkservers"]:
        evict(cs["data"])
    get = measure(masters, "get", remotes, source, digest, replication, size, work)
    for r in remotes:
        if client.exists(r):
            reclaim(client, r)
    return {"put": put, "get": get}


def run(size: int, reps: int, clients: list[int], replications: list[int],
        data_dir: str | None) -> dict:
    from cli.localcluster import LocalCluster
    from gfs.client import Client
    size = max(PIECE, size - size % PIECE)          # whole 1 MiB pieces
    started = time.monotonic()
    base = tempfile.mkdtemp(prefix="gfs-bench-data-", dir=data_dir)
    results = []
    client_stats = {f"clients ({op})": {"peak_rss": 0, "cpu_s": 0.0} for op in ("put", "get")}
    try:
        print(f"  physical references ({size / MB:.0f} MB, {reps} reps) in {base}", flush=True)
        phys = physical(base, size, reps)
        source, digest = make_source(base, size)
        cluster = LocalCluster(os.path.join(base, "cluster"))
        try:
            cluster.create(masters=3, chunkservers=3)
            cluster.up()
            terms = [raft_term(cluster)]
            with Client(cluster.master_addresses()) as c:
                c.mkdir("/bench")
                for repl in replications:
                    for n in clients:
                        runs = [put_then_get(cluster, c, [f"/bench/r{repl}-c{n}-{rep}-{i}"
                                                          for i in range(n)],
                                             repl, source, digest, size, base)
                                for rep in range(reps)]
                        for op in ("put", "get"):
                            rs = [r[op] for r in runs]
                            results.append({"op": op, "replication": repl, "clients": n,
                                            **_summary([r["mb_s"] for r in rs]),
                                            "errors": sum(r["errors"] for r in rs)})
                            print(f"  {op} r={repl} c={n}: {results[-1]['mb_s']:.0f} MB/s",
                                  flush=True)
                            seen = client_stats[f"clients ({op})"]
                            seen["peak_rss"] = max([seen["peak_rss"]]
                                                   + [r["client_rss"] for r in rs])
                            seen["cpu_s"] += sum(r["client_cpu_s"] for r in rs)
            procs = {d["name"]: process_stats(cluster.pid(d["name"])) for d in cluster.daemons()}
            procs.update(client_stats)
            terms.append(raft_term(cluster))
        finally:
            cluster.down()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return {"size": size, "reps": reps, "physical": phys, "results": results,
            "processes": procs, "raft_terms": terms, "wall_s": time.monotonic() - started}


def report(res: dict) -> str:
    phys = res["physical"]
    ref = {"put": ("write", "raw write"), "get": ("cold_read", "raw cold read")}
    rng = lambda r: f"{r['mb_s_min']:.0f}–{r['mb_s_max']:.0f}"
    rows = [[f"{r['op']} (replication {r['replication']})", r["clients"], f"{r['mb_s']:.0f}",
             rng(r), f"{r['mb_s'] / phys[ref[r['op']][0]]['mb_s']:.2f} × {ref[r['op']][1]}",
             f"{r['mb_s'] / phys['loopback_tcp']['mb_s']:.2f}", r["errors"]]
            for r in res["results"]]
    rows += [[name, 1, f"{phys[key]['mb_s']:.0f}", rng(phys[key]), "", "", ""]
             for key, name in (("write", "raw write (1 MiB writes + fdatasync)"),
                               ("cold_read", "raw cold read (after FADV_DONTNEED)"),
                               ("warm_read", "raw warm read (page cache)"),
                               ("loopback_tcp", "loopback TCP (1 MiB sends)"))]
    throughput = table(["operation (3 masters, 3 chunkservers)", "clients", "MB/s (median)",
                        "range", "× physical", "× loopback TCP", "errors"], rows)
    procs = process_table(res["processes"])
    first, last = res["raft_terms"]
    return (f"{throughput}\n\n{procs}\n\nRaft term {first} → {last} during the run; "
            f"wall time {res['wall_s']:.0f} s; MB/s counts only clients that succeeded.")


def main(argv: list[str] | None = None) -> None:
    from gfs.units import parse_size
    ap = argparse.ArgumentParser(prog="bench datapath", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1GiB", help="bytes per client file (default: 1GiB)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--clients", default="1,4")
    ap.add_argument("--replication", default="1,3")
    ap.add_argument("--data", help="directory on the disk to measure (default: a temp dir)")
    a = ap.parse_args(argv)
    ints = lambda s: [int(x) for x in s.split(",")]
    res = run(parse_size(a.size), a.reps, ints(a.clients), ints(a.replication), a.data)
    print(report(res))
    print(f"results: {save_results('datapath', res)}")


if __name__ == "__main__":
    main()
