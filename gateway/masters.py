"""Routes from the masters: the gateway follows the leader's Routes.Watch stream (the same
follower as the permission feed, gfs/watchfeed.py) and applies each new route set on its event
loop. Every event, heartbeats included, confirms the routes in force are current."""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

from gateway.routing.route import Route
from gateway.sources import Apply
from gfs.routes_client import route_dict
from gfs.watchfeed import FeedFollower
from proto import routes_pb2 as rpb
from proto import routes_pb2_grpc as rpb_grpc

log = logging.getLogger("gateway.sources")


def route_of(message: rpb.GatewayRoute) -> Route:
    fields = route_dict(message)
    return Route.from_dict({k: v for k, v in fields.items() if k in Route.__dataclass_fields__})


class MasterSource:
    def __init__(self, masters: str, token: str, apply: Apply, confirm: Callable[[], None],
                 revision: int = 0, tls_ca: str | None = None):
        self.revision = revision                 # what the gateway serves (0: nothing yet)
        self._apply = apply
        self._confirm = confirm
        self._loop = asyncio.get_running_loop()
        self.feed = FeedFollower(masters, token, "routes", self._open, self._event, tls_ca)

    def _open(self, channels, address: str, metadata):
        return channels.stub(address, rpb_grpc.RoutesStub).Watch(
            rpb.RouteWatchRequest(from_revision=self.revision), metadata=metadata)

    def _event(self, event: rpb.RouteWatchEvent) -> None:
        """On the follower's thread: hand the event to the event loop."""
        self._loop.call_soon_threadsafe(self._on_loop, event)

    def _on_loop(self, event: rpb.RouteWatchEvent) -> None:
        if event.snapshot:
            try:
                routes = [route_of(r) for r in event.routes]
                self._apply(routes, event.revision)
            except ValueError as err:     # the masters validated them: a newer gateway rule?
                log.error("routes revision %d refused: %s (keeping the routes in force)",
                          event.revision, err)
                return
            self.revision = event.revision
        if event.revision == self.revision:
            self._confirm()

    def start(self) -> None:
        self.feed.start()

    def stop(self) -> None:
        self.feed.stop()
