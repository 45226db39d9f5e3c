"""The procedure docs/deployment.md gives for a master whose disk is lost (membership is fixed
at start, so the replacement takes the dead one's id and addresses with an empty data
directory): it catches up from the others and then holds the data on its own."""
from __future__ import annotations

import shutil
from pathlib import Path

from one_master import paths_on
from polling import wait_for


def test_master_replaced_with_an_empty_disk_catches_up_and_holds_the_data(make_cluster):
    c = make_cluster(options={"master": {"election-timeout": 0.3, "compact-entries": 30}})
    with c.client() as client:
        for i in range(60):
            client.mkdir(f"/before-{i}")
    dead = next(d["name"] for d in c.daemons() if d["name"] != c.leader())
    c.kill(dead)
    data = Path(c.daemon(dead)["data"])
    shutil.rmtree(data)                          # the disk is gone
    with c.client() as client:
        for i in range(60):
            client.mkdir(f"/while-down-{i}")
    c.start(dead)                                # same id and addresses, empty data directory
    c.wait_healthy(30)
    want = {f"/before-{i}" for i in range(60)} | {f"/while-down-{i}" for i in range(60)}
    wait_for(lambda: want <= paths_on(c, dead), 30, "the replacement to catch up", 0.2)
    # With the replacement and one other master only, the group still has everything.
    leader = c.leader()
    victim = leader if leader != dead else next(
        m["name"] for m in c.spec["masters"] if m["name"] != dead)
    c.kill(victim)
    assert c.pid(dead)
    with c.client(deadline=30) as client:
        assert want <= {e.path for e in client.list("/")}
        client.mkdir("/after")
