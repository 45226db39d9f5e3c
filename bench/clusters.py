"""Fresh clusters for one benchmark: gfs (cli.localcluster) and the etcd peer (bench.etcd),
each started under the run's work directory, its processes' peak RSS and CPU read before it is
stopped, and always stopped by PID."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from bench.common import process_stats
from bench.etcd import EtcdCluster, EtcdMissing, etcd_version


@contextmanager
def gfs(work: str, name: str, masters: int = 3, chunkservers: int = 0,
        options: dict | None = None, *, tls: bool = False,
        insecure_no_auth: bool = False) -> Iterator:
    """A started LocalCluster in work/name, stopped at the end (secure unless
    `insecure_no_auth`: see gfs/auth/insecure.py)."""
    from cli.localcluster import LocalCluster
    cluster = LocalCluster(os.path.join(work, name), insecure_no_auth=insecure_no_auth)
    cluster.create(masters=masters, chunkservers=chunkservers, options=options, tls=tls)
    try:
        # Benchmark clients (here and in worker processes) act as the cluster's administrator.
        with cluster.signed_in():
            cluster.up(timeout=60)
            yield cluster
    finally:
        cluster.down()


def gfs_processes(cluster) -> dict[str, dict]:
    """Peak RSS and CPU seconds of every running daemon of a LocalCluster."""
    return {d["name"]: process_stats(cluster.pid(d["name"])) for d in cluster.daemons()}


def etcd_processes(cluster: EtcdCluster) -> dict[str, dict]:
    return {n: process_stats(cluster.pid(n)) for n in cluster.names}


def with_etcd(ctx, name: str, body: Callable[[EtcdCluster], dict]) -> dict:
    """Run `body` against a fresh 3-member etcd; {"skipped": reason} where etcd cannot run."""
    if not ctx.etcd:
        return {"skipped": "etcd comparison turned off (--no-etcd)"}
    cluster = EtcdCluster(os.path.join(ctx.work, name))
    try:
        cluster.start()
    except EtcdMissing as err:
        print(f"  etcd skipped: {err}", flush=True)
        if str(err) not in ctx.notes:
            ctx.notes.append(f"etcd skipped: {err}")
        return {"skipped": str(err)}
    try:
        res = body(cluster)
        res["processes"] = etcd_processes(cluster)
        res["version"] = etcd_version()
        return res
    finally:
        cluster.stop()
