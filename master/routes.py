"""Gateway routes in the replicated state: one record per route name in the `routes` database,
and a revision counter every gateway follows (docs/gateway.md). Only administrators change or
read them; every change is audited by the state machine (the ops are `audited`)."""
from __future__ import annotations

from typing import Any

from gateway.routing.route import Route
from gateway.routing.trie import RouteTable
from gfs.errors import AlreadyExists, InvalidArgument, NotFound
from master.identity import require_admin
from master.store import Tx

ROUTES = "routes"
ROUTES_REV = b"routes_rev"            # meta counter: the revision of the last route change
MAX_ROUTES = 100_000


def route_field(field: str, value: Any) -> dict:
    """A route as a command carries it, checked as the gateway will check it."""
    if not isinstance(value, dict):
        raise InvalidArgument(f"{field} must be a map, not {type(value).__name__}")
    try:
        return Route.from_dict(dict(value)).to_dict()
    except (TypeError, ValueError) as err:
        raise InvalidArgument(f"{field}: {err}") from None


def _all(tx: Tx) -> list[dict]:
    return [record for _, record in tx.records(ROUTES)]


def route_of_record(record: dict) -> Route:
    return Route(**{k: v for k, v in record.items() if k in Route.__dataclass_fields__})


def put(tx: Tx, args: dict) -> dict:
    """Add a route (or replace one of the same name with `replace`). Refused when it would
    match exactly the requests another route matches: the gateway could not serve both."""
    require_admin(args["caller"], "changing gateway routes")
    route = args["route"]
    name = route["name"]
    existing = tx.get(ROUTES, name.encode())
    if existing is not None and not args["replace"]:
        raise AlreadyExists(f"route {name} exists (use --replace to change it)")
    if existing is None and tx.count(ROUTES) >= MAX_ROUTES:
        raise InvalidArgument(f"there are already {MAX_ROUTES} routes")
    others = [route_of_record(r) for r in _all(tx) if r["name"] != name]
    try:
        RouteTable(others + [route_of_record(route)])
    except ValueError as err:
        raise AlreadyExists(str(err)) from None
    revision = tx.counter(ROUTES_REV) + 1
    tx.set_counter(ROUTES_REV, revision)
    record = {**route, "revision": revision, "updated_ms": args["now"],
              "updated_by": args["caller"].label}
    tx.put(ROUTES, name.encode(), record)
    return record


def remove(tx: Tx, args: dict) -> dict:
    require_admin(args["caller"], "changing gateway routes")
    if not tx.delete(ROUTES, args["name"].encode()):
        raise NotFound(f"no route {args['name']}")
    revision = tx.counter(ROUTES_REV) + 1
    tx.set_counter(ROUTES_REV, revision)
    return {"revision": revision}


def listing(tx: Tx, caller) -> dict:
    """{"revision", "routes"} for an administrator."""
    require_admin(caller, "reading gateway routes")
    return {"revision": tx.counter(ROUTES_REV), "routes": _all(tx)}
