"""Validation of state-machine commands: every field checked before anything is applied, so a
malformed command fails with INVALID_ARGUMENT identically on every replica."""
from __future__ import annotations

from typing import Any, Callable

from gfs import paths
from gfs.errors import InvalidArgument
from master.store import CLIENT_ID_BYTES, MAX_U32, MAX_U64, Session, show

MAX_TEXT_BYTES = 255          # owner names and replica addresses
CHUNK_UNIT = 64 * 1024

# --- command validation ------------------------------------------------------------------------

Check = Callable[[str, Any], Any]


def int_in(low: int, high: int = MAX_U64) -> Check:
    def check(field: str, value: Any) -> int:
        if type(value) is not int:
            raise InvalidArgument(f"field {field!r} must be an int, not {type(value).__name__}")
        if not low <= value <= high:
            raise InvalidArgument(f"field {field!r} must be between {low} and {high}, not {value}")
        return value
    return check


def boolean(field: str, value: Any) -> bool:
    if type(value) is not bool:
        raise InvalidArgument(f"field {field!r} must be a bool, not {type(value).__name__}")
    return value


def text(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"field {field!r} must be a str, not {type(value).__name__}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgument(f"field {field!r} is not valid UTF-8") from None
    if size > MAX_TEXT_BYTES:
        raise InvalidArgument(f"field {field!r} is longer than {MAX_TEXT_BYTES} UTF-8 bytes")
    return value


def path_field(field: str, value: Any) -> str:
    try:
        return paths.normalize(value)
    except InvalidArgument as exc:
        raise InvalidArgument(f"field {field!r}: {exc.message}") from None


def path_or_empty(field: str, value: Any) -> str:
    """A path, or "" for "none given"."""
    return "" if value == "" else path_field(field, value)


def one_of(*choices: str) -> Check:
    def check(field: str, value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise InvalidArgument(f"field {field!r} must be one of {', '.join(choices)}, not {show(value)}")
        return value
    return check


def chunk_size_field(field: str, value: Any) -> int:
    int_in(CHUNK_UNIT)(field, value)
    if value % CHUNK_UNIT:
        raise InvalidArgument(f"field {field!r} must be a multiple of {CHUNK_UNIT}, not {value}")
    return value


def client_id_field(field: str, value: Any) -> bytes:
    if type(value) is not bytes or len(value) != CLIENT_ID_BYTES:
        raise InvalidArgument(f"field {field!r} must be {CLIENT_ID_BYTES} bytes, not {show(value)}")
    return value


def bytes_of(length: int) -> Check:
    def check(field: str, value: Any) -> bytes:
        if type(value) is not bytes or len(value) != length:
            raise InvalidArgument(f"field {field!r} must be {length} bytes, not {show(value)}")
        return value
    return check


def optional_bytes(length: int) -> Check:
    """`length` bytes, or None."""
    exact = bytes_of(length)
    return lambda field, value: None if value is None else exact(field, value)


def list_of(item: Check) -> Check:
    def check(field: str, value: Any) -> list:
        if not isinstance(value, list):
            raise InvalidArgument(f"field {field!r} must be a list, not {type(value).__name__}")
        return [item(f"{field}[{i}]", element) for i, element in enumerate(value)]
    return check


def pair_of(first: Check, second: Check) -> Check:
    def check(field: str, value: Any) -> tuple:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise InvalidArgument(f"field {field!r} must be a pair, not {show(value)}")
        return first(f"{field}[0]", value[0]), second(f"{field}[1]", value[1])
    return check


def map_of(schema: dict[str, Check]) -> Check:
    def check(field: str, value: Any) -> dict:
        if not isinstance(value, dict):
            raise InvalidArgument(f"field {field!r} must be a map, not {type(value).__name__}")
        return fields(value, schema, where=f"{field}.")
    return check


def fields(obj: dict, required: dict[str, Check], optional: dict[str, Check] | None = None,
            where: str = "") -> dict:
    """Validate `obj` against a schema: no unknown or missing fields, every value well-typed."""
    optional = optional or {}
    for name in obj:
        if name not in required and name not in optional:
            raise InvalidArgument(f"unknown field {where}{show(name)}")
    for name in required:
        if name not in obj:
            raise InvalidArgument(f"missing field {where}{name!r}")
    schema = {**required, **optional}
    return {name: check(where + name, obj[name]) for name, check in schema.items() if name in obj}


MODE = int_in(0, MAX_U32)
INODE = int_in(1)
COMMON: dict[str, Check] = {"op": text, "now": int_in(0)}
SESSION: dict[str, Check] = {"client_id": client_id_field, "seq": int_in(1), "ack_seq": int_in(0)}


def parse_session(command: Any) -> Session | None:
    """The command's exactly-once header, or None for a command without one."""
    if not isinstance(command, dict):
        raise InvalidArgument(f"a command must be a map, not {type(command).__name__}")
    present = [name for name in SESSION if name in command]
    if not present:
        return None
    if len(present) != len(SESSION):
        raise InvalidArgument("fields 'client_id', 'seq' and 'ack_seq' must come together")
    session = Session(*(check(name, command[name]) for name, check in SESSION.items()))
    if session.ack_seq >= session.seq:
        raise InvalidArgument(f"field 'ack_seq' ({session.ack_seq}) must be less than 'seq' ({session.seq})")
    return session

