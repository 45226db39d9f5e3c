"""An S3 request arriving while the permission feed is silent (a master failover, every master
restarting) waits a moment for it to come back instead of failing at once; it is refused with
503 only when the feed stays silent (gateway/s3/credentials.py). The store is the real
PermissionStore, fed events by hand instead of by a master."""
from __future__ import annotations

import asyncio
import hashlib
import time

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from gateway.s3 import credentials as s3credentials
from gateway.s3.errors import S3Error
from gfs.auth import s3keys
from gfs.auth.watcher import PermissionStore
from proto import identity_pb2 as ipb

KEY = b"k" * 32
HASHED = hashlib.sha256(b"alice's token").digest()


@pytest.fixture
def store():
    store = PermissionStore(["127.0.0.1:1"], "unused")      # never started: fed by hand
    store._apply(ipb.WatchEvent(
        revision=1, snapshot=True, users=[ipb.User(name="alice", kind="user")],
        tokens=[ipb.TokenRecord(hash=HASHED, token=ipb.Token(id="t1", principal="alice",
                                                               scopes=["*"]))]))
    yield store
    store.stop()


def _signed_request():
    creds = BotoCredentials(s3keys.access_key_id(HASHED), s3keys.secret_for(KEY, HASHED))
    req = AWSRequest(method="GET", url="http://127.0.0.1:9000/bucket/key")
    S3SigV4Auth(creds, "s3", "us-east-1").add_auth(req)
    headers = [(k.lower(), v if isinstance(v, str) else v.decode()) for k, v in req.headers.items()]
    return "GET", "/bucket/key", [], headers, "127.0.0.1:9000"


def _silent(store: PermissionStore, seconds: float) -> None:
    store._feed.heard = time.monotonic() - seconds


def test_a_request_waits_for_the_feed_to_come_back(store):
    creds = s3credentials.Credentials(store, KEY)
    _silent(store, 10)
    with pytest.raises(S3Error) as refused:
        creds.authenticate(*_signed_request())
    assert refused.value.code == "ServiceUnavailable"

    async def feed_returns_soon():
        await asyncio.sleep(0.3)
        _silent(store, 0)

    async def main():
        back = asyncio.create_task(feed_returns_soon())
        caller = await creds.authenticate_soon(*_signed_request())
        await back
        return caller

    started = time.monotonic()
    assert asyncio.run(main()).user == "alice"
    assert 0.25 < time.monotonic() - started < s3credentials.FEED_BACK_WAIT_S


def test_a_feed_that_stays_silent_is_refused_with_503(store, monkeypatch):
    monkeypatch.setattr(s3credentials, "FEED_BACK_WAIT_S", 0.3)
    creds = s3credentials.Credentials(store, KEY)
    _silent(store, 10)
    started = time.monotonic()
    with pytest.raises(S3Error) as refused:
        asyncio.run(creds.authenticate_soon(*_signed_request()))
    assert refused.value.code == "ServiceUnavailable" and refused.value.status == 503
    assert time.monotonic() - started >= 0.3
