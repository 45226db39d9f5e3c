"""Daemon request signatures, chunk capabilities and the masters' key handling, without servers."""
from __future__ import annotations

import os

import pytest

from gfs.auth.capability import READ, WRITE, CapabilityIssuer, CapabilityVerifier
from gfs.auth.daemon import DaemonAuth
from gfs.errors import PermissionDenied, Unauthenticated, Unavailable
from master import capability_keys
from master.capabilities import ACTIVATE_AFTER_S, MasterCapabilities

SECRET = os.urandom(32)
METHOD = "/gfs.chunkserver.Chunkserver/DeleteChunk"


class Clock:
    def __init__(self, t: float = 1_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_daemon_signature_binds_method_body_and_secret():
    auth = DaemonAuth(SECRET)
    md = [auth.sign(METHOD, b"body")]
    auth.verify(md, METHOD, b"body")
    for method, body, verifier in ((METHOD, b"other", auth),
                                   ("/gfs.chunkserver.Chunkserver/CopyChunk", b"body", auth),
                                   (METHOD, b"body", DaemonAuth(os.urandom(32)))):
        with pytest.raises(Unauthenticated, match="does not verify"):
            verifier.verify(md, method, body)
    for bad in ([], [("gfs-daemon-auth", "x")], [("gfs-daemon-auth", "1.zz.00")]):
        with pytest.raises(Unauthenticated):
            auth.verify(bad, METHOD, b"body")


def test_daemon_signature_outside_the_clock_window_or_replayed_is_refused():
    clock = Clock()
    signer, verifier = DaemonAuth(SECRET, clock=clock), DaemonAuth(SECRET, clock=clock)
    md = [signer.sign(METHOD, b"b")]
    clock.t += 31
    with pytest.raises(Unauthenticated, match="window"):
        verifier.verify(md, METHOD, b"b")
    clock.t -= 31
    verifier.verify(md, METHOD, b"b", once=True)
    with pytest.raises(Unauthenticated, match="replayed"):
        verifier.verify(md, METHOD, b"b", once=True)
    verifier.verify([signer.sign(METHOD, b"b")], METHOD, b"b", once=True)   # a new one is fine


def test_capabilities_verify_locally_and_refuse_precisely():
    clock = Clock()
    issuer = CapabilityIssuer(SECRET, ttl_s=60, clock=clock)
    verifier = CapabilityVerifier(SECRET, clock=clock)
    salt1, salt2, salt3 = (os.urandom(16) for _ in range(3))
    cap = issuer.issue(1, salt1, 0xAB, 3, READ)
    with pytest.raises(Unavailable):
        verifier.verify(cap, 0xAB, 3, READ)            # no keys heard yet
    verifier.set_keys([(1, salt1)])
    verifier.verify(cap, 0xAB, 3, READ)
    with pytest.raises(PermissionDenied):
        verifier.verify(cap, 0xAC, 3, READ)
    with pytest.raises(PermissionDenied):
        verifier.verify(cap, 0xAB, 4, READ)
    with pytest.raises(PermissionDenied):
        verifier.verify(cap, 0xAB, 3, WRITE)
    with pytest.raises(Unauthenticated, match="does not verify"):
        _verify_with(os.urandom(32), [(1, salt1)], cap, clock)   # another cluster's secret
    with pytest.raises(Unauthenticated, match="does not verify"):
        _verify_with(SECRET, [(1, salt2)], cap, clock)           # same id, other salt
    clock.t += 61
    with pytest.raises(Unauthenticated, match="expired"):
        verifier.verify(cap, 0xAB, 3, READ)
    clock.t -= 61
    verifier.set_keys([(2, salt2), (3, salt3)])
    with pytest.raises(Unauthenticated, match="rotated out"):
        verifier.verify(cap, 0xAB, 3, READ)
    with pytest.raises(Unauthenticated, match="needs a capability"):
        verifier.verify(b"", 0xAB, 3, READ)


def _verify_with(secret, keys, cap, clock):
    v = CapabilityVerifier(secret, clock=clock)
    v.set_keys(keys)
    v.verify(cap, 0xAB, 3, READ)


class FakeState:
    """The replicated key list, applied through the real state-machine handler."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.stored = None

    def get(self, db, key):
        return self.stored

    def put(self, db, key, value):
        self.stored = value

    def keys(self):
        return capability_keys.read(self)

    def propose(self, command: dict) -> dict:
        command["now"] = int(self.clock() * 1000)
        return capability_keys.apply(self, command)


def test_masters_sign_with_the_previous_key_until_the_new_one_is_known():
    clock = Clock()
    state = FakeState(clock)
    caps = MasterCapabilities(SECRET, state.keys, state.propose, ttl_s=60, clock=clock)
    with pytest.raises(Unavailable):
        caps.read(1, 1)
    assert caps.rotate() == 1
    verifier = CapabilityVerifier(SECRET, clock=clock)
    verifier.set_keys(caps.announced())
    verifier.verify(caps.read(1, 1), 1, 1, READ)
    assert caps.rotate() == 2
    assert [k for k, _ in caps.announced()] == [2, 1]
    old_only = CapabilityVerifier(SECRET, clock=clock)
    old_only.set_keys([(k, s) for k, s in caps.announced() if k == 1])
    old_only.verify(caps.read(1, 1), 1, 1, READ)     # signed with key 1 while key 2 is new
    clock.t += ACTIVATE_AFTER_S
    verifier.set_keys(caps.announced())
    verifier.verify(caps.write(1, 2), 1, 2, WRITE)
    with pytest.raises(Unauthenticated, match="newer than any it heard of"):
        old_only.verify(caps.write(1, 2), 1, 2, WRITE)
    clock.t += 60 + 11                                # every key-1 capability has expired
    assert [k for k, _ in caps.announced()] == [2]
    # Racing rotations make one new key; only two are kept.
    assert capability_keys.apply(state, {"key_id": 2, "salt": os.urandom(16), "now": 0}) == \
        {"key_id": 2, "added": False}
    caps.rotate()
    assert [k["id"] for k in state.keys()] == [2, 3]


def test_a_chunkserver_waits_briefly_for_a_key_it_may_still_learn():
    import threading
    verifier = CapabilityVerifier(SECRET)
    assert verifier.may_learn(1)                       # no keys yet
    verifier.set_keys([(2, b"s" * 16)])
    assert verifier.may_learn(3) and not verifier.may_learn(1)
    assert not verifier.wait_for_key(3, 0.05)
    threading.Timer(0.05, verifier.set_keys, [[(3, b"t" * 16), (2, b"s" * 16)]]).start()
    assert verifier.wait_for_key(3, 5.0)
