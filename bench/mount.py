"""Mount and fsspec benchmark: what the FUSE mount and the `gfs://` fsspec file system cost beside
the native client, side by side in one run against 3 masters and 3 chunkservers.

    ./run.sh bench mount [--size 1GiB] [--files 500] [--reps 3]

- sequential write and read of one large file: `dd bs=1M` through the mount vs `gfs put/get`
  (the CLI, one process each) of the same file; reads are cold (chunk files evicted from the
  page cache) and every read is hash-checked. Target (issue 19): the mount ≥ 0.7× native.
- `tar x` of a tree of small files onto the mount vs the native client putting the same files
  one after another (files/s).
- a pyarrow scan of a Parquet dataset through fsspec vs the same dataset on local disk (MB/s).
Runs are interleaved (native, mount, native, mount, ...) and medians quoted.
"""
from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import time

from bench import clusters
from bench.common import MB, num, parse_ints, parse_sizes, ratio, rng, spread, table
from bench.datapath import evict_chunks, file_hash, make_source, reclaim
from bench.suite import Context, Option

NAME = "mount"
TITLE = "FUSE mount and fsspec beside the native client (3 masters, 3 chunkservers)"
FULL = {"size": [1 << 30], "files": [500], "file_size": 4096, "parquet_mb": 256, "reps": 3}
QUICK = {**FULL, "size": [64 << 20], "files": [50], "parquet_mb": 32, "reps": 1}
OPTIONS = [Option("--size", "size", parse_sizes, "size of the large file, e.g. 1GiB"),
           Option("--files", "files", parse_ints, "small files in the tar tree, e.g. 500")]


def _gfs(cluster, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "cli.main", *args], check=True,
                   env=cluster.cli_env(), capture_output=True)


def _timed(fn) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def _mount(cluster, where: str, *extra: str) -> int:
    os.makedirs(where, exist_ok=True)
    out = subprocess.run([sys.executable, "-m", "cli.main", "mount", where, "--path", "/bench",
                          "--log-file", where + ".log", *extra], check=True,
                         env=cluster.cli_env(), capture_output=True, text=True).stdout
    return int(re.search(r"pid (\d+)", out).group(1))


def _unmount(cluster, where: str, pid: int) -> None:
    subprocess.run([sys.executable, "-m", "cli.main", "umount", where], env=cluster.cli_env(),
                   capture_output=True)
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass


def _dd(src: str, dst: str, *flags: str) -> None:
    subprocess.run(["dd", f"if={src}", f"of={dst}", "bs=1M", "status=none", *flags], check=True)


def tmpfs_spool(size: int) -> str | None:
    """/dev/shm (a tmpfs on Linux) when it has room for two spools of `size` bytes."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    return "/dev/shm" if st.f_bavail * st.f_frsize >= 2 * size else None


def large_file(cluster, client, mnt: str, work: str, size: int, reps: int, seed: int,
               mnt_tmpfs: str | None = None) -> dict:
    """`mnt_tmpfs`: a second mount spooling on tmpfs (`--spool-dir /dev/shm`), written too."""
    source, digest = make_source(work, size, seed)
    back = os.path.join(work, "back.bin")
    runs: dict[str, list[float]] = {k: [] for k in ("native put", "mount write",
                                                    "native get", "mount read")}
    for rep in range(reps):
        native, mounted = f"/bench/native-{rep}.bin", f"/bench/mount-{rep}.bin"
        runs["native put"].append(size / _timed(lambda: _gfs(cluster, "put", source, native)) / MB)
        runs["mount write"].append(size / _timed(lambda: _dd(source, f"{mnt}/mount-{rep}.bin")) / MB)
        if mnt_tmpfs:
            runs.setdefault("mount write, tmpfs spool", []).append(size / _timed(
                lambda: _dd(source, f"{mnt_tmpfs}/tmpfs-{rep}.bin")) / MB)
            reclaim(cluster, client, f"/bench/tmpfs-{rep}.bin")
        # Each read writes a new local file (overwriting the last one's cached pages costs
        # the writer more, and only the second reader would pay it), around the page cache as
        # `gfs get` writes a large download (dd oflag=direct; docs/data-path.md), so neither
        # pays fresh cache pages for its copy. The two take turns at being first.
        reads = [("native get", lambda: _gfs(cluster, "get", native, back)),
                 ("mount read", lambda: _dd(f"{mnt}/mount-{rep}.bin", back, "oflag=direct"))]
        for name, read in reads if rep % 2 == 0 else reads[::-1]:
            evict_chunks(cluster)
            runs[name].append(size / _timed(read) / MB)
            assert file_hash(back) == digest, f"{name}: bytes differ"
            os.unlink(back)
        for remote in (native, mounted):
            reclaim(cluster, client, remote)
    os.unlink(source)
    return {k: spread(v) for k, v in runs.items()}


def small_files(cluster, client, mnt: str, work: str, count: int, file_size: int,
                reps: int, seed: int) -> dict:
    tree = os.path.join(work, "tree")
    rand = random.Random(seed)
    names = [f"d{i % 20:02d}/f{i:05d}.txt" for i in range(count)]
    for name in names:
        os.makedirs(os.path.join(tree, os.path.dirname(name)), exist_ok=True)
        with open(os.path.join(tree, name), "wb") as f:
            f.write(rand.randbytes(file_size))
    archive = os.path.join(work, "tree.tar")
    with tarfile.open(archive, "w") as tar:
        tar.add(tree, arcname="tree")
    runs: dict[str, list[float]] = {"native put": [], "mount tar x": []}
    for rep in range(reps):
        base = f"/bench/native-tree-{rep}"

        def native() -> None:
            for d in sorted({os.path.dirname(n) for n in names}):
                client.mkdir(f"{base}/{d}", parents=True)
            for name in names:
                client.put(os.path.join(tree, name), f"{base}/{name}")

        runs["native put"].append(count / _timed(native))
        target = os.path.join(mnt, f"tar-{rep}")
        os.makedirs(target)
        runs["mount tar x"].append(count / _timed(lambda: subprocess.run(
            ["tar", "xf", archive, "-C", target], check=True)))
        subprocess.run(["diff", "-r", tree, os.path.join(target, "tree")], check=True,
                       capture_output=True)
        client.delete(base, recursive=True, skip_trash=True)
        client.delete(f"/bench/tar-{rep}", recursive=True, skip_trash=True)
    shutil.rmtree(tree)
    os.unlink(archive)
    return {k: spread(v) for k, v in runs.items()}


def parquet_scan(cluster, work: str, megabytes: int, reps: int, seed: int) -> dict:
    import fsspec
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq
    local = os.path.join(work, "parquet")
    os.makedirs(local)
    rows = int(megabytes * MB) // 4 // 16       # 4 files, 16 bytes a row
    rand = random.Random(seed)
    table_ = pa.table({"a": pa.array([rand.getrandbits(63) for _ in range(rows)], pa.int64()),
                       "b": pa.array([rand.random() for _ in range(rows)], pa.float64())})
    fs = fsspec.filesystem("gfs", masters=cluster.master_addresses(),
                           token=cluster.admin_token, skip_instance_cache=True)
    for i in range(4):
        pq.write_table(table_, os.path.join(local, f"part-{i}.parquet"), compression="none")
        fs.put_file(os.path.join(local, f"part-{i}.parquet"), f"/bench/parquet/part-{i}.parquet")
    size = sum(os.path.getsize(os.path.join(local, f)) for f in os.listdir(local))
    runs: dict[str, list[float]] = {"local disk": [], "gfs:// (fsspec)": []}
    for _ in range(reps):
        evict_chunks(cluster)
        from bench.refs import evict
        evict(local)
        runs["local disk"].append(size / _timed(
            lambda: ds.dataset(local, format="parquet").to_table()) / MB)
        runs["gfs:// (fsspec)"].append(size / _timed(
            lambda: ds.dataset("/bench/parquet", filesystem=fs, format="parquet").to_table()) / MB)
    shutil.rmtree(local)
    return {"bytes": size, **{k: spread(v) for k, v in runs.items()}}


def run(cfg: dict, ctx: Context) -> dict:
    out: dict = {}
    with clusters.gfs(ctx.work, "mount-gfs", chunkservers=3) as cluster, \
            cluster.client() as c:
        c.mkdir("/bench")
        mnt, mnt_tmpfs = os.path.join(ctx.work, "mnt"), os.path.join(ctx.work, "mnt-tmpfs")
        spool = tmpfs_spool(cfg["size"][0])
        pid = _mount(cluster, mnt)
        pid_tmpfs = _mount(cluster, mnt_tmpfs, "--spool-dir", spool) if spool else None
        try:
            out["large"] = large_file(cluster, c, mnt, ctx.work, cfg["size"][0], cfg["reps"],
                                      ctx.seed, mnt_tmpfs if spool else None)
            out["small"] = small_files(cluster, c, mnt, ctx.work, cfg["files"][0],
                                       cfg["file_size"], cfg["reps"], ctx.seed)
        finally:
            _unmount(cluster, mnt, pid)
            if pid_tmpfs:
                _unmount(cluster, mnt_tmpfs, pid_tmpfs)
        out["parquet"] = parquet_scan(cluster, ctx.work, cfg["parquet_mb"], cfg["reps"], ctx.seed)
        out["processes"] = clusters.gfs_processes(cluster)
    out["size"], out["files"] = cfg["size"][0], cfg["files"][0]
    return out


def report(res: dict, refs: dict) -> str:
    large, small, pq_ = res["large"], res["small"], res["parquet"]
    rows = []
    for mine, native, unit in (("mount write", "native put", "MB/s"),
                               ("mount read", "native get", "MB/s")):
        rows.append([f"{res['size'] >> 20} MiB file: {mine} (dd bs=1M) vs {native}",
                     f"{num(large[mine]['median'])} {unit}", rng(large[mine]),
                     f"{num(large[native]['median'])} {unit}",
                     ratio(large[mine]["median"], large[native]["median"]), "≥ 0.7"])
    if "mount write, tmpfs spool" in large:
        rows.append([f"{res['size'] >> 20} MiB file: mount write with `--spool-dir /dev/shm` "
                     "(tmpfs) vs native put",
                     f"{num(large['mount write, tmpfs spool']['median'])} MB/s",
                     rng(large["mount write, tmpfs spool"]),
                     f"{num(large['native put']['median'])} MB/s",
                     ratio(large["mount write, tmpfs spool"]["median"],
                           large["native put"]["median"]), "—"])
    rows.append([f"tar x of {res['files']} small files vs native put of each",
                 f"{num(small['mount tar x']['median'])} files/s", rng(small["mount tar x"]),
                 f"{num(small['native put']['median'])} files/s",
                 ratio(small["mount tar x"]["median"], small["native put"]["median"]), "—"])
    rows.append([f"pyarrow scan of {pq_['bytes'] / MB:.0f} MB Parquet: gfs:// vs local disk",
                 f"{num(pq_['gfs:// (fsspec)']['median'])} MB/s", rng(pq_["gfs:// (fsspec)"]),
                 f"{num(pq_['local disk']['median'])} MB/s",
                 ratio(pq_["gfs:// (fsspec)"]["median"], pq_["local disk"]["median"]), "—"])
    return (table(["measurement", "mount / fsspec (median)", "range", "beside it (median)",
                   "ratio", "target"], rows)
            + "\n\nReads are cold (chunk files and the local Parquet files evicted from the page "
              "cache) and hash-checked; native put/get are `gfs put/get` processes.")


def figures(res: dict, refs: dict) -> list[dict]:
    return []
