"""Following one of the leader's Watch streams (identity, gateway routes) from a service outside
the masters: a background thread that opens the stream on the leader (following its redirect
hint), hands every event to the service, and gives up on a stream that has gone silent for
longer than three of the leader's heartbeats so it can move on to a live master."""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Iterator

import grpc

from gfs.auth.tls import read_pem
from gfs.auth.tokens import bearer
from gfs.client import LEADER_METADATA_KEY
from gfs.config import ENV_TLS_CA, resolve_masters
from gfs.transfer import Channels

SILENT_S = 1.5                 # three of the leader's heartbeats: the stream is given up
OpenStream = Callable[[Channels, str, tuple], Iterator[Any]]   # (channels, address, metadata)


class FeedFollower:
    """`open_stream` starts the call on one master (called again after every reconnection, so
    it can ask for what follows the revision the service has); `apply` takes each event."""

    def __init__(self, masters: str | list[str] | None, token: str, name: str,
                 open_stream: OpenStream, apply: Callable[[Any], None],
                 tls_ca: str | None = None):
        """`tls_ca`: CA certificate file of a cluster serving TLS (default: GFS_TLS_CA)."""
        self.masters = resolve_masters(masters)
        self.reconnects = 0
        self.last_error = ""
        self.heard = 0.0                           # monotonic time of the last event
        self._open_stream = open_stream
        self._apply = apply
        self._metadata = bearer(token)
        ca_file = tls_ca or os.environ.get(ENV_TLS_CA)
        self._channels = Channels(tls_ca=read_pem(ca_file, "CA certificate") if ca_file else None)
        self._connected = 0.0                      # ... and of the last (re)connection
        self._stop = threading.Event()
        self._stream = None                        # the call being followed
        self._threads = [threading.Thread(target=self._follow, name=f"{name}-watch", daemon=True),
                         threading.Thread(target=self._watchdog, name=f"{name}-watchdog",
                                          daemon=True)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._channels.close()
        for thread in self._threads:
            if thread.ident is not None:           # started (stop() before start() is fine)
                thread.join(timeout=5)

    @property
    def lag_s(self) -> float:
        """Seconds since the feed was last heard (inf before the first event)."""
        return time.monotonic() - self.heard if self.heard else float("inf")

    def _follow(self) -> None:
        address, i = None, 0
        while not self._stop.is_set():
            address = address or self.masters[i % len(self.masters)]
            try:
                stream = self._stream = self._open_stream(self._channels, address, self._metadata)
                self._connected = time.monotonic()
                for event in stream:
                    self._apply(event)
                    self.heard = time.monotonic()
                    if self._stop.is_set():
                        stream.cancel()
                        return
            except grpc.RpcError as err:
                self.last_error = f"{address}: {err.details() or err.code().name}"
                hint = dict(err.trailing_metadata() or ()).get(LEADER_METADATA_KEY)
                address = hint if hint and hint != address else None
            except ValueError:           # the channel was closed by stop()
                return
            i += 1
            self.reconnects += 1
            self._stop.wait(0.05 if address else 0.2)

    def _watchdog(self) -> None:
        """A master that stopped (paused, cut off) keeps its connection open and sends nothing:
        give up on a stream silent for more than three heartbeats, so the follower moves on."""
        while not self._stop.wait(0.1):
            stream, since = self._stream, max(self.heard, self._connected)
            if stream is not None and since and time.monotonic() - since > SILENT_S:
                self.last_error = f"no event for {time.monotonic() - since:.1f} s"
                stream.cancel()
                self._stream = None
