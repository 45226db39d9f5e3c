"""`rm -r` and trash purge of a big tree with real daemons, the reaper forced to small batches
(GFS_REAP_BATCH=20): the tree is gone from the namespace at once, other clients' writes go on,
the master killed with SIGKILL while reaping carries on after its restart, and nothing of the
tree is left in the end."""
from __future__ import annotations

import io
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor

import pytest

from gfs.errors import GfsError, NotFound
from tests.integration.polling import wait_for
from tests.integration.small_cluster import OPTIONS, small_cluster

DIRS, PER_DIR = 10, 40          # 400 files and 11 directories: 21 reap commands of 20


def make_tree(client, top: str) -> None:
    client.mkdir(top, parents=True)
    for d in range(DIRS):
        client.mkdir(f"{top}/d{d}")
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: client.put(io.BytesIO(b"x%d" % i),
                                           f"{top}/d{i % DIRS}/f{i}"),
                      range(DIRS * PER_DIR)))


def test_big_tree_removed_in_bounded_reaps_across_a_master_crash(make_cluster, monkeypatch):
    monkeypatch.setenv("GFS_REAP_BATCH", "20")        # the daemons inherit it
    c = small_cluster(make_cluster, OPTIONS)
    master = c.spec["masters"][0]["name"]
    with c.client() as client:
        make_tree(client, "/tree")
        client.mkdir("/other")
        assert client.delete("/tree", recursive=True, skip_trash=True) == 0
        with pytest.raises(NotFound):
            client.stat("/tree")                      # gone at once, as a whole
        client.put(io.BytesIO(b"meanwhile"), "/other/during")
        wait_for(lambda: client.health()["reaped_inodes"] > 0, 30, "reaping under way")
    c.kill(master)                                    # most likely mid-way
    c.start(master)
    with c.client() as client:
        wait_for(lambda: _health(client).get("reaping_trees") == 0, 60,
                 "the reaper to finish after the restart")
        # Nothing of the tree is left: its names are free, and a new tree starts empty.
        client.mkdir("/tree/d0", parents=True)
        assert list(client.list("/tree/d0")) == []
        client.put(io.BytesIO(b"new"), "/tree/d0/f0")
        assert client.read("/other/during") == b"meanwhile"

        # A trash purge of a big tree goes the same way.
        make_tree(client, "/big")
        assert client.delete("/big", recursive=True) > 0        # to the trash
        assert client.trash_purge() == 1
        assert client.trash_list() == []
        wait_for(lambda: client.health()["reaping_trees"] == 0, 60, "the purged tree reaped")
    log = (Path(c.spec["masters"][0]["data"]) / "daemon.log").read_text()
    assert "reaped" in log


def _health(client) -> dict:
    try:
        return client.health()
    except GfsError:        # the restarted master may not lead yet
        return {}
