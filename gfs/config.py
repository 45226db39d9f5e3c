"""Where the client finds the cluster: a flag, else GFS_MASTERS, else the addresses the most
recent `gfs cluster up` recorded for this user."""
from __future__ import annotations

import json
import os
from pathlib import Path

from gfs.errors import FailedPrecondition, InvalidArgument
from gfs.reach import check_address

ENV_MASTERS = "GFS_MASTERS"
ENV_TOKEN = "GFS_TOKEN"
ENV_TLS_CA = "GFS_TLS_CA"


def positive_int_env(name: str, default: int) -> int:
    """The environment variable `name` as a positive whole number; `default` when it is unset
    or empty; InvalidArgument (naming the variable) for anything else."""
    raw = os.environ.get(name, "")
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise InvalidArgument(f"{name} must be a positive whole number, not {raw!r}")
    return int(raw)


def user_config_dir() -> Path:
    """$GFS_CONFIG_DIR, else $XDG_CONFIG_HOME/gfs, else ~/.config/gfs."""
    if os.environ.get("GFS_CONFIG_DIR"):
        return Path(os.environ["GFS_CONFIG_DIR"])
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "gfs"


def recorded_cluster_file() -> Path:
    return user_config_dir() / "cluster.json"


def token_file() -> Path:
    return user_config_dir() / "token"


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` atomically, readable by its owner only (0600 from the start)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def record_cluster(masters: list[str], data_dir: str, token: str = "",
                   tls_ca: str | None = None) -> None:
    """Remember the masters (and the TLS CA, if it uses TLS) of the cluster this user just
    started (and sign in as its administrator, when its token is given)."""
    record = {"masters": masters, "data": data_dir, **({"tls_ca": tls_ca} if tls_ca else {})}
    write_private(recorded_cluster_file(), json.dumps(record, indent=2))
    if token:
        save_token(token)


def resolve_tls_ca(flag: str | None = None) -> str | None:
    """The CA certificate file to verify the cluster's TLS certificates with: a flag, else
    GFS_TLS_CA, else the one the last `gfs cluster up --tls` recorded; None: no TLS."""
    if flag or os.environ.get(ENV_TLS_CA):
        return flag or os.environ[ENV_TLS_CA]
    if split_addresses(os.environ.get(ENV_MASTERS)):
        return None            # another cluster than the recorded one
    try:
        return json.loads(recorded_cluster_file().read_text()).get("tls_ca")
    except (OSError, ValueError, AttributeError):
        return None


def save_token(token: str) -> None:
    """What `gfs login` does: remember the token for later commands (0600)."""
    write_private(token_file(), token + "\n")


def forget_token() -> bool:
    """`gfs logout`: whether a token was remembered."""
    try:
        token_file().unlink()
        return True
    except FileNotFoundError:
        return False


def resolve_token(flag: str | None = None) -> str:
    """The token to call with: the one given ("" = anonymous, on purpose), else $GFS_TOKEN, else
    the one `gfs login` (or `gfs cluster up`) remembered; none of them: "" (anonymous)."""
    if flag is not None:
        return flag.strip()
    if os.environ.get(ENV_TOKEN):
        return os.environ[ENV_TOKEN].strip()
    try:
        return token_file().read_text().strip()
    except OSError:
        return ""


def split_addresses(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    return [v.strip() for v in value if v and v.strip()]


def resolve_masters(flag: str | list[str] | None = None) -> list[str]:
    """The master gRPC addresses to use (each HOST:PORT), or a clear error saying how to give
    them."""
    masters = split_addresses(flag) or split_addresses(os.environ.get(ENV_MASTERS))
    if masters:
        return [check_address(a) for a in masters]
    path = recorded_cluster_file()
    try:
        masters = split_addresses(json.loads(path.read_text()).get("masters"))
    except (OSError, ValueError, AttributeError):
        masters = []
    if masters:
        return [check_address(a, f"master address in {path}") for a in masters]
    raise FailedPrecondition(f"no cluster given: use --masters HOST:PORT,..., set {ENV_MASTERS}, "
                             "or start one with `gfs cluster up`")
