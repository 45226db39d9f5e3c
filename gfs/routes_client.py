"""The Client's gateway route calls (proto/routes.proto), as a mixin of `Client`."""
from __future__ import annotations

from proto import master_pb2 as pb
from proto import routes_pb2 as rpb
from proto import routes_pb2_grpc as rpb_grpc

ROUTE_LISTS = ("to", "allow", "deny")


def route_dict(message: rpb.GatewayRoute) -> dict:
    return {f.name: (list(v) if f.name in ROUTE_LISTS else v)
            for f in message.DESCRIPTOR.fields for v in [getattr(message, f.name)]}


class RouteCalls:
    """Needs the Client's `_call(...)` and `_mutate(...)`."""

    def route_put(self, route: dict, replace: bool = False) -> dict:
        """Add a route (administrators); `replace` changes one of the same name."""
        return route_dict(self._mutate("Put", rpb.RoutePutRequest, service=rpb_grpc.RoutesStub,
                                       route=rpb.GatewayRoute(**route), replace=replace))

    def route_remove(self, name: str) -> None:
        self._mutate("Remove", rpb.RouteRemoveRequest, service=rpb_grpc.RoutesStub, name=name)

    def routes(self) -> dict:
        """{"revision", "routes": [...]} (administrators)."""
        got = self._call("List", pb.Empty(), service=rpb_grpc.RoutesStub)
        return {"revision": got.revision, "routes": [route_dict(r) for r in got.routes]}
