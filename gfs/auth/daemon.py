"""Daemon-to-daemon request signatures: how masters and chunkservers prove to each other that
a request comes from a holder of the cluster secret.

A signed call carries gRPC metadata `gfs-daemon-auth: <ms>.<nonce>.<tag>` where

    tag = HMAC-SHA256(key, method || ms || nonce || SHA-256(body))

`key` is derived from the cluster secret (purpose "gfs-daemon-rpc"), `method` the full gRPC
method path, `ms` the sender's wall clock in milliseconds, `body` the deterministic
serialization of the request (of the first message for a client stream: a chunk write's
header). The receiver accepts it within `skew_s` of its own clock; for requests that change
something (`once=True`: heartbeats, copy/delete/move orders) it also remembers every tag it
accepted until it is too old to pass the clock check, so a captured request cannot be replayed,
and no captured credential can be reused with another body or method.

`Channels(DaemonAuth(secret))` signs every call made through it (`SigningInterceptor`).
"""
from __future__ import annotations

import collections
import hashlib
import hmac
import itertools
import os
import threading
import time
from typing import Callable, Iterable, NamedTuple

import grpc

from gfs.auth.secret import derive_key
from gfs.errors import Unauthenticated
from gfs.clock import now as gfs_now

METADATA_KEY = "gfs-daemon-auth"
DEFAULT_SKEW_S = 30.0
MAX_REMEMBERED = 200_000      # replay cache bound (entries live 2 × skew)


def body_of(message) -> bytes:
    """The bytes a signature covers: the message's deterministic serialization."""
    return message.SerializeToString(deterministic=True)


class DaemonAuth:
    """Signs and verifies daemon requests with a key derived from the cluster secret."""

    def __init__(self, cluster_secret: bytes, *, skew_s: float = DEFAULT_SKEW_S,
                 clock: Callable[[], float] = gfs_now):
        self._key = derive_key(cluster_secret, "gfs-daemon-rpc")
        self.skew_s = skew_s
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: collections.OrderedDict[bytes, float] = collections.OrderedDict()

    def _tag(self, method: str, ms: int, nonce: bytes, body: bytes) -> bytes:
        message = b"%s\n%d\n%s%s" % (method.encode(), ms, nonce, hashlib.sha256(body).digest())
        return hmac.digest(self._key, message, hashlib.sha256)

    def sign(self, method: str, body: bytes) -> tuple[str, str]:
        """The metadata pair that authenticates calling `method` with `body`."""
        ms = int(self._clock() * 1000)
        nonce = os.urandom(8)
        return METADATA_KEY, f"{ms}.{nonce.hex()}.{self._tag(method, ms, nonce, body).hex()}"

    @staticmethod
    def presented(metadata: Iterable[tuple[str, object]] | None) -> str | None:
        """The signature a request carries, if any."""
        for key, value in metadata or ():
            if key == METADATA_KEY:
                return value if isinstance(value, str) else value.decode(errors="replace")
        return None

    def verify(self, metadata: Iterable[tuple[str, object]] | None, method: str, body: bytes,
               *, once: bool = False) -> None:
        """Raise Unauthenticated unless the request carries a valid signature of (method,
        body); with `once`, also unless this signature was never accepted before."""
        value = self.presented(metadata)
        name = method.rsplit("/", 1)[-1]
        if value is None:
            raise Unauthenticated(f"{name} is for cluster daemons only: no daemon signature")
        try:
            ms_text, nonce_hex, tag_hex = value.split(".")
            ms, nonce, tag = int(ms_text), bytes.fromhex(nonce_hex), bytes.fromhex(tag_hex)
        except ValueError:
            raise Unauthenticated(f"{name}: malformed daemon signature") from None
        if not hmac.compare_digest(tag, self._tag(method, ms, nonce, body)):
            raise Unauthenticated(f"{name}: daemon signature does not verify (wrong cluster "
                                  f"secret, or the request was altered)")
        age = self._clock() - ms / 1000
        if abs(age) > self.skew_s:
            raise Unauthenticated(f"{name}: daemon signature is {age:+.0f} s old, outside the "
                                  f"±{self.skew_s:g} s window (clocks out of sync?)")
        if once:
            self._remember(tag)

    def _remember(self, tag: bytes) -> None:
        now = time.monotonic()
        with self._lock:
            while self._seen and (next(iter(self._seen.values())) < now
                                  or len(self._seen) >= MAX_REMEMBERED):
                self._seen.popitem(last=False)
            if tag in self._seen:
                raise Unauthenticated("replayed daemon request")
            self._seen[tag] = now + 2 * self.skew_s


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: tuple | None
    credentials: object
    wait_for_ready: bool | None
    compression: object


class _Details(_CallDetails, grpc.ClientCallDetails):
    pass


class SigningInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                         grpc.StreamUnaryClientInterceptor):
    """Adds a daemon signature to every call of a channel (a client stream is signed over its
    first message, which the interceptor takes from the iterator and puts back)."""

    def __init__(self, auth: DaemonAuth):
        self.auth = auth

    def _details(self, details, body: bytes) -> _Details:
        method = details.method if isinstance(details.method, str) else details.method.decode()
        metadata = tuple(details.metadata or ()) + (self.auth.sign(method, body),)
        return _Details(details.method, details.timeout, metadata, details.credentials,
                        details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details, body_of(request)), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details, body_of(request)), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        first = next(request_iterator, None)
        body = b"" if first is None else body_of(first)
        rest = itertools.chain([] if first is None else [first], request_iterator)
        return continuation(self._details(client_call_details, body), rest)
