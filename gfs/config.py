"""Where the client finds the cluster: a flag, else GFS_MASTERS, else the addresses the most
recent `gfs cluster up` recorded for this user."""
from __future__ import annotations

import json
import os
from pathlib import Path

from gfs.errors import FailedPrecondition

ENV_MASTERS = "GFS_MASTERS"


def user_config_dir() -> Path:
    """$GFS_CONFIG_DIR, else $XDG_CONFIG_HOME/gfs, else ~/.config/gfs."""
    if os.environ.get("GFS_CONFIG_DIR"):
        return Path(os.environ["GFS_CONFIG_DIR"])
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "gfs"


def recorded_cluster_file() -> Path:
    return user_config_dir() / "cluster.json"


def record_cluster(masters: list[str], data_dir: str) -> None:
    """Remember the masters of the cluster this user just started."""
    path = recorded_cluster_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"masters": masters, "data": data_dir}, indent=2))
    tmp.replace(path)


def split_addresses(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    return [v.strip() for v in value if v and v.strip()]


def resolve_masters(flag: str | list[str] | None = None) -> list[str]:
    """The master gRPC addresses to use, or a clear error saying how to give them."""
    masters = split_addresses(flag) or split_addresses(os.environ.get(ENV_MASTERS))
    if masters:
        return masters
    path = recorded_cluster_file()
    try:
        masters = split_addresses(json.loads(path.read_text()).get("masters"))
    except (OSError, ValueError, AttributeError):
        masters = []
    if masters:
        return masters
    raise FailedPrecondition(f"no cluster given: use --masters HOST:PORT,..., set {ENV_MASTERS}, "
                             "or start one with `gfs cluster up`")
