"""The S3 API beside the native client, in one run against a fresh cluster (3 masters,
3 chunkservers, replication 3, `cluster up --s3`):

    python -m bench.s3 [--size 1GiB] [--seconds 5] [--threads 1,16] [--keys 10000]
                       [--small-only] [--repeat 1]

- a large object: boto3 upload_file / download_file (multipart, 8 parallel parts) vs native
  `Client.put` / `Client.get`, MB/s;
- a multipart upload made by hand: 8 parts of size/8 uploaded by 8 threads, then
  CompleteMultipartUpload (Compose: no byte copied), MB/s, and the Complete alone in seconds;
- 4 KiB objects: PUT and GET ops/s through boto3 vs native, at each thread count, and the CPU
  milliseconds per operation of the client (this process: boto3, or the native client), the
  gateway and the masters (read from /proc over the same runs: on a loaded machine the figure
  that says most; on 2 cores boto3's own share bounds what any server can reach);
- ListObjectsV2 over --keys keys (one flat prefix), seconds for the whole paginated listing.

`--small-only` runs the 4 KiB rows alone; `--repeat N` measures each ops/s point, each large
transfer and the listing N times and reports the median (on a loaded machine one point says
little).

Prints a Markdown table with the machine's load average before and after (the figures depend
on what else runs), and beside it the figures issue 18 quotes for a Ceph RGW (radosgw 16.2 from
Debian, 1 mon, 3 BlueStore OSDs on files, replication 3, boto3 client) on this machine class:
quoted, not measured here (no radosgw runs beside gfs in this suite). Not a timed test.
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from gfs.units import parse_size

SMALL = 4096
# Issue 18's Ceph RGW figures (quoted: ranges as given; "4 KiB GET" with tcp_nodelay).
RADOSGW = {"large PUT": "222-245", "large GET": "411-642", "4 KiB PUT 1": "146",
           "4 KiB PUT 16": "300", "4 KiB GET 1": "394", "4 KiB GET 16": "685",
           "ListObjectsV2": "1.0 (10,000 keys)"}


def _ops_per_s(op, threads: int, seconds: float) -> tuple[float, int]:
    """(ops/s, ops done) of `threads` threads calling `op(thread, n)` for `seconds`."""
    stop = time.monotonic() + seconds
    counts = [0] * threads

    def run(i: int) -> None:
        n = 0
        while time.monotonic() < stop:
            op(i, n)
            n += 1
        counts[i] = n
    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    start = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / (time.monotonic() - start), sum(counts)


def _cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) process `pid` has used (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _CpuMeter:
    """CPU ms per operation of the gateway, the leader and all masters over one measurement,
    less what each uses idle (ticks, heartbeats, loops: measured first, for `idle_s`): on a
    loaded machine the figure that says most about a change."""

    def __init__(self, cluster, idle_s: float = 3.0):
        self.cluster = cluster
        pids = self._pids()
        before = {name: _cpu_s(pid) for name, pid in pids.items()}
        time.sleep(idle_s)
        self.idle = {name: (_cpu_s(pid) - before[name]) / idle_s for name, pid in pids.items()}

    def _pids(self) -> dict[str, int | None]:
        masters = [m["name"] for m in self.cluster.spec["masters"]]
        leader = self.cluster.leader()
        return {"client": os.getpid(), "gateway": self.cluster.pid("gateway-s3"),
                "leader": self.cluster.pid(leader) if leader else None,
                **{m: self.cluster.pid(m) for m in masters}}

    def measure(self, fn) -> tuple[object, dict[str, float]]:
        """(fn()'s result (ops/s, ops), ms of CPU per op by gateway/leader/masters)."""
        pids = self._pids()
        before = {name: _cpu_s(pid) for name, pid in pids.items()}
        start = time.monotonic()
        result = fn()
        elapsed = time.monotonic() - start
        used = {name: _cpu_s(pid) - before[name] - self.idle.get(name, 0.0) * elapsed
                for name, pid in pids.items()}
        ops = max(1, result[1])
        masters = sum(v for k, v in used.items() if k not in ("client", "gateway", "leader"))
        return result, {"client": used["client"] * 1000 / ops,
                        "gateway": used["gateway"] * 1000 / ops,
                        "leader": used["leader"] * 1000 / ops, "masters": masters * 1000 / ops}


def _timed(fn) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def _multipart_by_hand(s3, src: str, size: int, parts: int) -> tuple[float, float]:
    """(seconds for the whole upload, seconds for CompleteMultipartUpload alone): `parts` parts
    of size/parts (the last takes the rest), each PUT by its own thread."""
    part = max(5 << 20, -(-size // parts))
    start = time.monotonic()
    upload = s3.create_multipart_upload(Bucket="bench", Key="by-hand")["UploadId"]

    def put(n: int) -> dict:
        with open(src, "rb") as f:
            f.seek(n * part)
            body = f.read(part)
        etag = s3.upload_part(Bucket="bench", Key="by-hand", UploadId=upload, PartNumber=n + 1,
                              Body=body)["ETag"]
        return {"PartNumber": n + 1, "ETag": etag}
    count = -(-size // part)
    with ThreadPoolExecutor(count) as pool:
        done = list(pool.map(put, range(count)))
    complete = time.monotonic()
    s3.complete_multipart_upload(Bucket="bench", Key="by-hand", UploadId=upload,
                                 MultipartUpload={"Parts": done})
    end = time.monotonic()
    return end - start, end - complete


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1GiB", help="large object size")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per ops/s point")
    parser.add_argument("--threads", default="1,16", help="client threads, e.g. 1,16")
    parser.add_argument("--keys", type=int, default=10_000, help="keys for the listing")
    parser.add_argument("--work", default=None, help="work directory (default: a temporary one)")
    parser.add_argument("--small-only", action="store_true",
                        help="only the 4 KiB PUT/GET rows (no large object, multipart, listing)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="measure each ops/s point, each large transfer and the listing "
                             "this many times, report the median")
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    threads = [int(t) for t in args.threads.split(",")]
    work = args.work or tempfile.mkdtemp(prefix="gfs-bench-s3-")
    from botocore.config import Config
    import boto3

    from cli.localcluster import LocalCluster, free_port
    cluster = LocalCluster(os.path.join(work, "cluster"))
    cluster.create(masters=3, chunkservers=3)
    endpoint = f"127.0.0.1:{free_port()}"
    cluster.set_s3(endpoint)
    rows, cpu_rows = [], []
    load_before = os.getloadavg()
    try:
        cluster.up(timeout=90)
        native = cluster.client()
        keys = native.s3_credentials()
        s3 = boto3.client("s3", endpoint_url="http://" + endpoint, region_name="us-east-1",
                          aws_access_key_id=keys["access_key_id"],
                          aws_secret_access_key=keys["secret_access_key"],
                          config=Config(s3={"addressing_style": "path"},
                                        max_pool_connections=max(threads) + 8,
                                        signature_version="s3v4"))
        s3.create_bucket(Bucket="bench")
        native.mkdir("/admin/native", parents=True)
        if not args.small_only:
            _large_rows(rows, native, s3, work, size, args.repeat)
        _small_rows(rows, native, s3, threads, args.seconds, args.repeat,
                    _CpuMeter(cluster), cpu_rows)
        if not args.small_only:
            _listing_row(rows, s3, args.keys, args.repeat)
        native.close()
    finally:
        cluster.down()
        if not args.work:                        # a temporary one: 2x --size of files in it
            shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    what = "4 KiB objects" if args.small_only else f"{size / (1 << 20):.0f} MiB object"
    print(f"| {what}, {os.cpu_count()} cores | native gfs | boto3 "
          f"via the gateway | ratio | radosgw (issue 18, quoted, 1 GiB) |")
    print("|---|---:|---:|---:|---:|")
    for name, nat, via, ref in rows:
        ratio = f"{via / nat:.2f}x" if nat and via else ""
        print(f"| {name} | {'' if nat is None else f'{nat:,.1f}'} | "
              f"{'' if via is None else f'{via:,.1f}'} | {ratio} | {ref} |")
    if args.repeat > 1:
        print(f"\nmedians of {args.repeat} runs: large transfers (native and S3 taking turns), "
              f"ops/s points of {args.seconds:g} s each, the listing")
    if cpu_rows:
        print("\n| 4 KiB objects: CPU ms per op (idle use taken off) | client (boto3 or "
              "native, this process) | gateway | leader master | all masters |")
        print("|---|---:|---:|---:|---:|")
        for name, cpu in cpu_rows:
            print(f"| {name} | {cpu['client']:.2f} | {cpu['gateway']:.2f} | "
                  f"{cpu['leader']:.2f} | {cpu['masters']:.2f} |")
    print(f"\nload average (1 min) before {load_before[0]:.1f}, after {load_after[0]:.1f}")


def _large_rows(rows: list, native, s3, work: str, size: int, repeat: int) -> None:
    """The large object through upload_file/download_file and a multipart upload by hand;
    each transfer `repeat` times, native and S3 taking turns, the median reported (the first
    transfer into fresh daemons is the slowest: their buffers fault in fresh pages)."""
    from boto3.s3.transfer import TransferConfig
    src = os.path.join(work, "large.bin")
    with open(src, "wb") as f:
        for _ in range(0, size, 1 << 24):
            f.write(os.urandom(min(1 << 24, size)))
        f.truncate(size)
    mb = size / 1e6
    transfer = TransferConfig(multipart_chunksize=64 << 20, max_concurrency=8)
    out = os.path.join(work, "out.bin")

    def rate(native_op, s3_op) -> tuple[float, float]:
        native_s, s3_s = [], []
        for _ in range(repeat):
            native_s.append(_timed(native_op))
            s3_s.append(_timed(s3_op))
        return mb / statistics.median(native_s), mb / statistics.median(s3_s)
    rows.append(("large PUT MB/s (upload_file)",
                 *rate(lambda: native.put(src, "/admin/native/large.bin", overwrite=True),
                       lambda: s3.upload_file(src, "bench", "large.bin", Config=transfer)),
                 RADOSGW["large PUT"]))
    rows.append(("large GET MB/s (download_file)",
                 *rate(lambda: native.get("/admin/native/large.bin", out),
                       lambda: s3.download_file("bench", "large.bin", out, Config=transfer)),
                 RADOSGW["large GET"]))
    os.remove(out)
    upload, complete = _multipart_by_hand(s3, src, size, parts=8)
    rows.append(("multipart, 8 parallel parts, MB/s", None, mb / upload, ""))
    rows.append(("  of which CompleteMultipartUpload, s", None, complete, ""))


def _small_rows(rows: list, native, s3, threads: list[int], seconds: float,
                repeat: int, meter: _CpuMeter, cpu_rows: list) -> None:
    """4 KiB PUT and GET ops/s, native and boto3, at each thread count (median of `repeat`),
    and the CPU each cost the gateway and the masters (over all `repeat` runs)."""
    data = os.urandom(SMALL)

    def rate(name: str, op, n: int) -> float:
        def runs():
            results = [_ops_per_s(op, n, seconds) for _ in range(max(1, repeat))]
            return statistics.median(r[0] for r in results), sum(r[1] for r in results)
        (ops_s, _), cpu = meter.measure(runs)
        cpu_rows.append((name, cpu))
        return ops_s
    for n in threads:
        put_native = rate(f"native PUT, {n} thread(s)", lambda i, k: native.put(
            io.BytesIO(data), f"/admin/native/p{n}-{i}-{k}", overwrite=True), n)
        put_s3 = rate(f"boto3 PUT, {n} thread(s)", lambda i, k: s3.put_object(
            Bucket="bench", Key=f"small/p{n}-{i}-{k}", Body=data), n)
        rows.append((f"4 KiB PUT ops/s, {n} thread(s)", put_native, put_s3,
                     RADOSGW.get(f"4 KiB PUT {n}", "")))
        native.put(io.BytesIO(data), "/admin/native/g", overwrite=True)
        s3.put_object(Bucket="bench", Key="g", Body=data)
        get_native = rate(f"native GET, {n} thread(s)",
                          lambda i, k: native.read("/admin/native/g"), n)
        get_s3 = rate(f"boto3 GET, {n} thread(s)",
                      lambda i, k: s3.get_object(Bucket="bench", Key="g")["Body"].read(), n)
        rows.append((f"4 KiB GET ops/s, {n} thread(s)", get_native, get_s3,
                     RADOSGW.get(f"4 KiB GET {n}", "")))


def _listing_row(rows: list, s3, keys: int, repeat: int) -> None:
    """The whole paginated listing, `repeat` times (median), and the CPU boto3 itself spent on
    it (parsing each page's XML: on 2 cores that bounds the row whatever the server does)."""
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket="bench", Key=f"list/{k:06d}", Body=b""),
                      range(keys)))

    def listing() -> None:
        got = sum(len(p.get("Contents", [])) for p in s3.get_paginator(
            "list_objects_v2").paginate(Bucket="bench", Prefix="list/"))
        if got != keys:
            raise AssertionError(f"listed {got} keys, not {keys}")
    walls, cpus = [], []
    for _ in range(repeat):
        cpu = time.process_time()
        walls.append(_timed(listing))
        cpus.append(time.process_time() - cpu)
    rows.append((f"ListObjectsV2 of {keys} keys, s", None, statistics.median(walls),
                 RADOSGW["ListObjectsV2"]))
    rows.append(("  of which boto3's own CPU (this process), s", None,
                 statistics.median(cpus), ""))


if __name__ == "__main__":
    from bench.common import stop_cleanly_on_sigterm
    stop_cleanly_on_sigterm()
    main()
