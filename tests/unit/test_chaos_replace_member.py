"""The nemesis's replace_member fault (bench/chaos/nemesis.py) against a fake cluster: when
leadership moves to the chosen member between the choice and the removal, the leader is
stepped down and the removal retried (a CI run failed when it was not)."""
from contextlib import contextmanager

from bench.chaos.nemesis import Nemesis
from gfs.errors import FailedPrecondition


class FakeClient:
    def __init__(self, cluster: "FakeCluster"):
        self.cluster = cluster

    def step_down(self, to: str, timeout: float) -> dict:
        self.cluster.calls.append("step_down")
        self.cluster.current_leader = "master-2"
        return {"leader_raft": "10.0.0.2:7000"}

    def member_remove(self, raft: str, timeout: float) -> dict:
        self.cluster.calls.append(f"remove {raft}")
        if self.cluster.current_leader == "master-1":
            raise FailedPrecondition(f"{raft} is the leader: hand leadership over first "
                                     "(`gfs master step-down`), then remove it")
        return {}

    def member_add(self, raft: str, grpc: str, timeout: float) -> dict:
        self.cluster.calls.append(f"add {raft}")
        return {"commit_s": 0.1, "catch_up_s": 0.2}


class FakeCluster:
    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        names = ["master-1", "master-2", "master-3"]
        self.daemons = {n: {"name": n, "raft": f"10.0.0.{i}:7000", "grpc": f"10.0.0.{i}:7100",
                            "options": {}} for i, n in enumerate(names, 1)}
        self.spec = {"masters": [self.daemons[n] for n in names], "faultfs": False}
        self.current_leader = "master-3"   # the leader when the fault chooses its member
        self.calls: list[str] = []

    def leader(self) -> str:
        leader = self.current_leader
        self.current_leader = "master-1"   # ... and an election moves it to the chosen one
        return leader

    def daemon(self, name: str) -> dict:
        return self.daemons[name]

    @contextmanager
    def client(self, deadline: float):
        yield FakeClient(self)

    def signal(self, name: str, sig) -> None:
        self.calls.append(f"kill {name}")

    def _wait_gone(self, name: str, timeout: float) -> None:
        pass

    def data_path(self, m: dict) -> str:
        return str(self.tmp_path / m["name"])

    def start(self, name: str) -> None:
        self.calls.append(f"start {name}")


def test_leadership_moving_to_the_chosen_member_is_handed_over_again(tmp_path):
    cluster = FakeCluster(tmp_path)
    nemesis = Nemesis(cluster, None, seed=1, clock=lambda: 0.0, election_timeout=1.0)
    nemesis.rng.choice = lambda seq: "master-1"
    fault = nemesis._replace_member()
    assert cluster.calls == ["remove 10.0.0.1:7000", "step_down", "remove 10.0.0.1:7000",
                             "kill master-1", "start master-1", "add 10.0.0.1:7000"]
    assert fault.detail["stepped_down_to"] == "10.0.0.2:7000"
    assert "is the leader" in fault.detail["retried"][0]
