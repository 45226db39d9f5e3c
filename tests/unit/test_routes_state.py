"""Gateway routes in the state machine (master/routes.py) over a real LMDB, without servers."""
from __future__ import annotations

import pytest

from gfs.errors import PermissionDenied
from gfs.auth.tokens import token_hash
from master.identity import audit_records
from master.store import Tx
from tests.unit.test_identity_state import Log, log, people  # noqa: F401  (fixtures)

ROUTE = {"name": "api", "host": "api.example.com", "path": "/v1/*",
         "to": ["http://10.0.0.5:8080", "http://10.0.0.6:8080"]}


def put(route, replace=False):
    return {"op": "route_put", "route": route, "replace": replace}


def listing(log: Log, token) -> dict:
    return log.state.routes(token_hash(token), 1_000_000)


def test_put_list_replace_remove_with_revisions(log, people):
    admin = people["admin"]
    rec = log.ok(put(ROUTE), admin)
    assert rec["revision"] == 1 and rec["updated_by"] == "token 'bootstrap' (admin)"
    assert rec["lb"] == "round-robin" and rec["timeout_s"] == 30.0     # defaults filled in
    assert log.err(put(ROUTE), admin)[0] == "ALREADY_EXISTS"
    rec = log.ok(put({**ROUTE, "retries": 3}, replace=True), admin)
    assert rec["revision"] == 2 and rec["retries"] == 3
    log.ok(put({"name": "users", "path": "/users/{id}", "to": ["h2c://10.0.0.7:50051"]}), admin)
    got = listing(log, admin)
    assert got["revision"] == 3 and [r["name"] for r in got["routes"]] == ["api", "users"]
    assert log.ok({"op": "route_remove", "name": "api"}, admin) == {"revision": 4}
    assert log.err({"op": "route_remove", "name": "api"}, admin)[0] == "NOT_FOUND"
    assert [r["name"] for r in listing(log, admin)["routes"]] == ["users"]
    assert log.state.routes_revision() == 4


def test_only_administrators_and_every_change_audited(log, people):
    assert log.err(put(ROUTE), people["alice"])[0] == "PERMISSION_DENIED"
    assert log.err(put(ROUTE), None)[0] in ("PERMISSION_DENIED", "UNAUTHENTICATED")
    log.ok(put(ROUTE), people["admin"])
    log.ok({"op": "route_remove", "name": "api"}, people["admin"])
    txn = log.state._env.begin()
    try:
        records = audit_records(Tx(txn, log.state._dbs), 100)
    finally:
        txn.abort()
    mine = [(r["op"], r["target"], r["result"].split(":")[0]) for r in records
            if r["op"].startswith("route_")]
    assert mine == [("route_put", "route api", "PERMISSION_DENIED"),
                    ("route_put", "route api", "PERMISSION_DENIED"),
                    ("route_put", "route api", "ok"), ("route_remove", "api", "ok")]
    with pytest.raises(PermissionDenied, match="not an administrator"):
        listing(log, people["alice"])


def test_bad_and_colliding_routes_are_refused_identically(log, people):
    admin = people["admin"]
    for bad, why in [({**ROUTE, "to": ["ftp://x:1"]}, "must be http"),
                     ({**ROUTE, "path": "/a/*/b"}, "only as the last"),
                     ({**ROUTE, "allow": ["10.0.0.1/8"]}, "bad CIDR"),
                     ({**ROUTE, "colour": "red"}, "unknown route field"),
                     ("not a map", "must be a map")]:
        code, message = log.err(put(bad), admin)
        assert code == "INVALID_ARGUMENT" and why in message, message
    log.ok(put(ROUTE), admin)
    code, message = log.err(put({**ROUTE, "name": "twin"}), admin)
    assert code == "ALREADY_EXISTS" and "match the same" in message
