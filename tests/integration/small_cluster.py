"""A started cluster of one master and three chunkservers (small chunks, fast heartbeats) with
two ordinary users, alice and bob, each with a token: what the client-integration tests (fsspec,
the mount) run against."""
from __future__ import annotations

OPTIONS = {"master": {"election-timeout": 0.3, "chunk-size": "1MiB", "dead-after": 3},
           "chunkserver": {"heartbeat-interval": 0.3}}


def small_cluster(factory, options: dict | None = None):
    """One master and three chunkservers, started. `factory`: make_cluster or
    make_module_cluster."""
    c = factory(masters=1, options=options or OPTIONS, start=False)
    for _ in range(3):
        c.add_chunkserver()
    c.up()
    return c


def cluster_with_people(factory, token_name: str):
    """`factory`: make_cluster or make_module_cluster. The tokens are `cluster.alice` and
    `cluster.bob`."""
    c = small_cluster(factory)
    with c.client() as admin:
        for name in ("alice", "bob"):
            admin.user_add(name)
            setattr(c, name, admin.token_create(token_name, principal=name)[0])
    return c
