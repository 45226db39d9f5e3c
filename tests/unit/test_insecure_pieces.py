"""The insecure mode's pieces (gfs/auth/insecure.py) without servers: secure and insecure
masters cannot exchange Raft frames, insecure masters sign no capabilities, and only an
insecure master ignores the caller's token."""
from __future__ import annotations

import os

import pytest

from gfs.auth import insecure
from gfs.auth.tokens import bearer, new_token, token_hash
from gfs.errors import FailedPrecondition
from master.callers import caller_of
from master.capabilities import NoCapabilities
from master.raft_auth import FrameAuthenticator, ForgedFrame
from master.state import AS_SYSTEM


class _Context:
    def __init__(self, metadata):
        self._metadata = metadata

    def invocation_metadata(self):
        return self._metadata


def test_secure_and_insecure_masters_cannot_exchange_raft_frames():
    secret = os.urandom(32)
    secure = FrameAuthenticator(secret, insecure.raft_purpose(False))
    unsafe = FrameAuthenticator(secret, insecure.raft_purpose(True))
    assert insecure.raft_purpose(False) == "gfs-raft-frames"     # unchanged for secure ones
    for sender, receiver in ((secure, unsafe), (unsafe, secure)):
        frame = sender.encrypt_at_time(b"payload", 1)
        with pytest.raises(ForgedFrame):
            receiver.decrypt(frame)
    peer = FrameAuthenticator(secret, insecure.raft_purpose(True))
    assert peer.decrypt(unsafe.encrypt_at_time(b"payload", 1)) == b"payload"


def test_insecure_masters_make_no_capabilities():
    caps = NoCapabilities()
    assert caps.read(1, 1) == caps.write(1, 1) == caps.signer("read")(1, 1) == b""
    assert caps.announced() == []
    with pytest.raises(FailedPrecondition):
        caps.rotate()


def test_only_an_insecure_master_ignores_the_callers_token():
    token = new_token()
    context = _Context(bearer(token))
    assert caller_of(context, False) == token_hash(token)
    assert caller_of(_Context(()), False) is None                # anonymous
    assert caller_of(context, True) is AS_SYSTEM
    assert caller_of(_Context(()), True) is AS_SYSTEM


def test_mode_names():
    assert insecure.mode_name(False) == "secure"
    assert insecure.mode_name(True) == "insecure-no-auth"
