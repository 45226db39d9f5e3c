"""A follower whose tick thread was held past its election deadline (a slow fdatasync behind a
busy disk) reads what its leader sent meanwhile before it decides to campaign
(master/raft.py `_listen_before_campaigning`): it does not depose a leader that never went
quiet. Three MetadataRaft nodes in this process, over real loopback sockets."""
from __future__ import annotations

import time

import pytest

from cli.localcluster import free_port
from master.raft import MetadataRaft, RaftConfig
from tests.integration.polling import wait_for

ELECTION_MIN, ELECTION_MAX = 0.5, 1.0
STALL_S = 2.5                      # > election_max, < pysyncobj's connection timeout (3.5 s)


@pytest.fixture
def group(tmp_path):
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    members = {a: "" for a in addresses}
    nodes = [MetadataRaft(a, members, str(tmp_path / f"m{i}"),
                          RaftConfig(election_min=ELECTION_MIN, election_max=ELECTION_MAX,
                                     heartbeat=0.05, tick=0.02),
                          cluster_secret=b"k" * 32)
             for i, a in enumerate(addresses)]
    for node in nodes:
        node.start()
    yield nodes
    for node in nodes:
        node.stop()


def test_a_follower_held_past_its_deadline_does_not_depose_a_live_leader(group):
    leader = wait_for(lambda: next((n for n in group if n.is_leader()), None), 20, "a leader",
                      interval=0.02)
    follower = next(n for n in group if n is not leader)
    wait_for(lambda: follower.leader_address() == leader.self_address, 20,
             "the follower's leader", interval=0.02)
    time.sleep(1.0)                          # settled: every member heard the leader
    term = leader.status()["term"]
    held = []
    durable = follower._make_durable

    def slow_once() -> None:                 # the next tick's group commit takes STALL_S
        if not held:
            held.append(time.monotonic())
            time.sleep(STALL_S)
        durable()

    follower._make_durable = slow_once
    wait_for(lambda: held, 20, "the stall", interval=0.02)
    time.sleep(STALL_S + 2 * ELECTION_MAX)
    assert follower.status()["role"] == "follower"
    assert leader.is_leader()
    assert [n.status()["term"] for n in group] == [term] * 3
