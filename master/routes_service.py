"""The Routes gRPC service (proto/routes.proto): gateway routes as administrators change them,
and the Watch stream every gateway follows."""
from __future__ import annotations

import asyncio
import time

from gfs.errors import GfsError
from master.callers import caller_of
from gfs.clock import now_ms
from master.routes import route_of_record
from master.service import MasterService, abort_with, rpc
from proto import master_pb2 as pb
from proto import routes_pb2 as rpb
from proto import routes_pb2_grpc as rpb_grpc

WATCH_POLL_S = 0.1              # how often a Watch stream looks for a new revision
WATCH_HEARTBEAT_S = 0.5         # the most time between two events of a Watch stream
ROUTE_FIELDS = ("name", "host", "path", "to", "lb", "strip_prefix", "timeout_s", "retries",
                "require_token", "allow", "deny", "health_path", "health_interval_s",
                "health_fall", "health_rise")


def route_message(record: dict) -> rpb.GatewayRoute:
    """A stored route as a message (fields it was stored without take their defaults)."""
    fields = route_of_record(record).to_dict()
    return rpb.GatewayRoute(**{k: fields[k] for k in ROUTE_FIELDS},
                            revision=record.get("revision", 0),
                            updated_ms=record.get("updated_ms", 0),
                            updated_by=record.get("updated_by", ""))


def route_record(message: rpb.GatewayRoute) -> dict:
    """The route fields of a message (defaults where the sender left them out)."""
    out = {}
    for name in ROUTE_FIELDS:
        value = getattr(message, name)
        if name in ("to", "allow", "deny"):
            out[name] = list(value)
        elif value or name in ("name", "path", "strip_prefix", "retries"):
            out[name] = value
    out.setdefault("path", "/*")
    if not out["path"]:
        out["path"] = "/*"
    return out


class RoutesService(rpb_grpc.RoutesServicer):
    def __init__(self, master: MasterService):
        self.m = master

    @rpc
    async def Put(self, request, context):
        ok = await self.m._mutate(request, context, {"op": "route_put",
                                                     "route": route_record(request.route),
                                                     "replace": request.replace})
        return route_message(ok)

    @rpc
    async def Remove(self, request, context):
        await self.m._mutate(request, context, {"op": "route_remove", "name": request.name})
        return pb.Empty()

    @rpc
    async def List(self, request, context):
        got = await self.m._read(context, lambda st, auth, now: st.routes(auth, now))
        return rpb.RouteListResponse(revision=got["revision"],
                                     routes=[route_message(r) for r in got["routes"]])

    async def Watch(self, request, context):
        """The route set at each new revision, heartbeats between (leader only, as the
        identity Watch: a gateway reconnects to the new leader when this one steps down)."""
        node = self.m.node
        try:
            auth = caller_of(context, node.insecure_no_auth)
            have, last_sent = request.from_revision, 0.0
            while True:
                node.require_leader()
                revision = await asyncio.to_thread(node.state_read,
                                                   lambda st: st.routes_revision())
                if revision != have:
                    got = await asyncio.to_thread(node.state_read,
                                                  lambda st: st.routes(auth, now_ms()))
                    yield rpb.RouteWatchEvent(revision=got["revision"], snapshot=True,
                                              heartbeat_s=WATCH_HEARTBEAT_S,
                                              routes=[route_message(r) for r in got["routes"]])
                    have, last_sent = got["revision"], time.monotonic()
                elif time.monotonic() - last_sent >= WATCH_HEARTBEAT_S:
                    await asyncio.to_thread(node.state_read, lambda st: node.require_admin(
                        st, auth, now_ms()))       # a revoked token loses the stream
                    yield rpb.RouteWatchEvent(revision=have, heartbeat_s=WATCH_HEARTBEAT_S)
                    last_sent = time.monotonic()
                else:
                    await asyncio.sleep(WATCH_POLL_S)
        except GfsError as err:
            await abort_with(context, err)
