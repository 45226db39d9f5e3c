"""The last route configuration a gateway applied, on disk, so it can start and serve when its
source (the masters) cannot be reached. Written atomically and fsync'd."""
from __future__ import annotations

import json
import os
import time

from gateway.routing.route import Route


def save(path: str, routes: list[Route], revision: int, confirmed_at: float) -> None:
    data = {"revision": revision, "confirmed_at": confirmed_at,
            "routes": [r.to_dict() for r in routes]}
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load(path: str) -> tuple[list[Route], int, float]:
    """(routes, revision, confirmed_at); raises OSError / ValueError on a missing or bad file."""
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("routes"), list):
        raise ValueError(f"{path}: not a gateway route file (no 'routes' list)")
    routes = [Route.from_dict(r) for r in data["routes"]]
    return routes, int(data.get("revision", 0)), float(data.get("confirmed_at", 0) or 0)


def staleness(confirmed_at: float) -> float:
    return time.time() - confirmed_at if confirmed_at else float("inf")
