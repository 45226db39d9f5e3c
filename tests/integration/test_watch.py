"""The permission push: a service's local PermissionStore follows the leader's Watch feed, sees a
revocation within 1 s, survives a leader change, and fails closed when the feed goes silent."""
from __future__ import annotations

import signal
import time

import grpc
import pytest

from gfs.auth.tokens import bearer
from gfs.auth.watcher import PermissionStore
from gfs.errors import GfsError
from proto import identity_pb2 as ipb
from proto import identity_pb2_grpc as ipb_grpc

OPTS = {"master": {"election-timeout": 0.3}}


def until_refused(store: PermissionStore, token: str, code: str, timeout: float = 5.0) -> float:
    """Seconds until `store` refuses `token` with `code`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            store.principal(token)
        except GfsError as err:
            if err.code == code:
                return time.monotonic() - start
        time.sleep(0.005)
    raise AssertionError(f"token still accepted (or not refused with {code}) after {timeout} s")


def wait_accepted(store: PermissionStore, token: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            assert store.principal(token).user == "alice"
            return
        except GfsError:
            assert time.monotonic() < deadline, store.last_error
            time.sleep(0.05)


def test_revocations_reach_a_watcher_within_a_second_and_it_fails_closed(make_cluster):
    cluster = make_cluster(masters=3, options=OPTS)
    with cluster.client() as admin:
        admin.user_add("alice")
        tokens = [admin.token_create(f"t{i}", principal="alice")[0] for i in range(3)]
    with PermissionStore(cluster.master_addresses(), cluster.admin_token) as store:
        store.wait_current()
        assert store.principal(tokens[0]).user == "alice"
        with cluster.client() as admin:
            start = time.monotonic()
            admin.token_revoke("t0")
            revoked_after = time.monotonic() - start + until_refused(store, tokens[0],
                                                                      "UNAUTHENTICATED")
            start = time.monotonic()
            admin.user_set("alice", disabled=True)
            disabled_after = time.monotonic() - start + until_refused(store, tokens[1],
                                                                       "UNAUTHENTICATED")
            admin.user_set("alice", disabled=False)
        print(f"revocation in force on the watcher after {revoked_after:.3f} s, "
              f"disabling after {disabled_after:.3f} s")
        assert revoked_after < 1.0 and disabled_after < 1.0
        # A new leader takes over the feed: the store follows it within its bound.
        leader = cluster.leader()
        cluster.signal(leader, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 20
            while cluster.leader() in (None, leader):
                assert time.monotonic() < deadline, "no new leader"
                time.sleep(0.1)
            wait_accepted(store, tokens[2])
        finally:
            cluster.signal(leader, signal.SIGCONT)
        # Every master stops: the feed goes silent and the store fails closed...
        names = [m["name"] for m in cluster.spec["masters"]]
        for name in names:
            cluster.signal(name, signal.SIGSTOP)
        try:
            silent = until_refused(store, tokens[2], "UNAVAILABLE", timeout=10)
            assert silent <= store.max_lag_s + 0.5
        finally:
            for name in names:
                cluster.signal(name, signal.SIGCONT)
        # ...until the masters are back.
        wait_accepted(store, tokens[2])
        assert store.reconnects >= 1


def test_only_administrators_may_watch(make_cluster):
    cluster = make_cluster(masters=1, options=OPTS)
    with cluster.client() as admin:
        admin.user_add("bob")
        bob = admin.token_create("t", principal="bob")[0]
    with grpc.insecure_channel(cluster.master_addresses()[0]) as ch:
        stub = ipb_grpc.IdentityStub(ch)
        for metadata, code in ((bearer(bob), grpc.StatusCode.PERMISSION_DENIED),
                               ((), grpc.StatusCode.PERMISSION_DENIED)):
            with pytest.raises(grpc.RpcError) as err:
                next(iter(stub.Watch(ipb.WatchRequest(), metadata=metadata, timeout=5)))
            assert err.value.code() == code
        first = next(iter(stub.Watch(ipb.WatchRequest(), metadata=bearer(cluster.admin_token),
                                     timeout=5)))
        assert first.snapshot and {u.name for u in first.users} == {"admin", "bob"}
