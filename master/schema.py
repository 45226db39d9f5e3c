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

# What each command field is called in messages (they reach people: say it in their terms).
_TERMS = {"src": "source path", "dst": "destination path", "chunk_size": "chunk size",
          "dest": "destination path", "sources": "source",
          "storage_class": "storage class", "default_class": "default storage class",
          "replication": "replication factor", "inode": "inode number", "index": "chunk index",
          "client_id": "client id", "ack_seq": "acknowledged sequence number",
          "seq": "sequence number", "all_users": "all-users flag"}


def term(field: str) -> str:
    """`field` as messages call it: 'chunk_size' -> 'chunk size', 'chunks[0].handle' -> ..."""
    base, sep, rest = field.partition("[")
    return _TERMS.get(base, base.replace("_", " ").replace(".", " ")) + sep + rest


def int_in(low: int, high: int = MAX_U64) -> Check:
    def check(field: str, value: Any) -> int:
        if type(value) is not int:
            raise InvalidArgument(f"{term(field)} must be an int, not {type(value).__name__}")
        if not low <= value <= high:
            raise InvalidArgument(f"{term(field)} must be between {low} and {high}, not {value}")
        return value
    return check


def boolean(field: str, value: Any) -> bool:
    if type(value) is not bool:
        raise InvalidArgument(f"{term(field)} must be a bool, not {type(value).__name__}")
    return value


def text(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{term(field)} must be a str, not {type(value).__name__}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgument(f"{term(field)} is not valid UTF-8") from None
    if size > MAX_TEXT_BYTES:
        raise InvalidArgument(f"{term(field)} is longer than {MAX_TEXT_BYTES} UTF-8 bytes")
    return value


def path_field(field: str, value: Any) -> str:
    return paths.normalize(value, what=term(field))


def path_or_empty(field: str, value: Any) -> str:
    """A path, or "" for "none given"."""
    return "" if value == "" else path_field(field, value)


def one_of(*choices: str) -> Check:
    def check(field: str, value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise InvalidArgument(f"{term(field)} must be one of {', '.join(choices)}, not {show(value)}")
        return value
    return check


def chunk_size_field(field: str, value: Any) -> int:
    if type(value) is not int or value < CHUNK_UNIT or value > MAX_U64 or value % CHUNK_UNIT:
        raise InvalidArgument(chunk_size_rule(value))
    return value


def chunk_size_rule(value: Any) -> str:
    """Why `value` is not a chunk size (the rule, in the units people type)."""
    shown = f"{value} bytes" if type(value) is int else show(value)
    unit = f"{CHUNK_UNIT >> 10} KiB"
    return f"chunk size must be a multiple of {unit}, at least {unit} (e.g. 1MiB, 64MiB), not {shown}"


def client_id_field(field: str, value: Any) -> bytes:
    if type(value) is not bytes or len(value) != CLIENT_ID_BYTES:
        raise InvalidArgument(f"{term(field)} must be {CLIENT_ID_BYTES} bytes, not {show(value)}")
    return value


def bytes_of(length: int) -> Check:
    def check(field: str, value: Any) -> bytes:
        if type(value) is not bytes or len(value) != length:
            raise InvalidArgument(f"{term(field)} must be {length} bytes, not {show(value)}")
        return value
    return check


def bytes_up_to(length: int) -> Check:
    def check(field: str, value: Any) -> bytes:
        if type(value) is not bytes or len(value) > length:
            raise InvalidArgument(f"{term(field)} must be at most {length} bytes, not "
                                  f"{show(value) if type(value) is not bytes else len(value)}")
        return value
    return check


def optional_bytes_in(*lengths: int) -> Check:
    """Bytes of one of `lengths`, or None."""
    def check(field: str, value: Any) -> bytes | None:
        if value is not None and (type(value) is not bytes or len(value) not in lengths):
            raise InvalidArgument(f"{term(field)} must be {' or '.join(map(str, lengths))} "
                                  f"bytes, not {show(value)}")
        return value
    return check


def list_of(item: Check) -> Check:
    def check(field: str, value: Any) -> list:
        if not isinstance(value, list):
            raise InvalidArgument(f"{term(field)} must be a list, not {type(value).__name__}")
        return [item(f"{field}[{i}]", element) for i, element in enumerate(value)]
    return check


def pair_of(first: Check, second: Check) -> Check:
    def check(field: str, value: Any) -> tuple:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise InvalidArgument(f"{term(field)} must be a pair, not {show(value)}")
        return first(f"{field}[0]", value[0]), second(f"{field}[1]", value[1])
    return check


MAX_XATTR_BYTES = 8192


def xattrs_field(field: str, value: Any) -> dict:
    """A file's extended attributes: str -> str, at most MAX_XATTR_BYTES of UTF-8 in all."""
    if not isinstance(value, dict):
        raise InvalidArgument(f"{term(field)} must be a map, not {type(value).__name__}")
    total = 0
    for key, item in value.items():
        text(f"{field} name", key)
        text(f"{field}[{key[:40]!r}]", item)
        total += len(key.encode()) + len(item.encode())
    if total > MAX_XATTR_BYTES:
        raise InvalidArgument(f"{term(field)} hold {total} bytes; at most {MAX_XATTR_BYTES}")
    return value


def map_of(schema: dict[str, Check], optional: dict[str, Check] | None = None) -> Check:
    def check(field: str, value: Any) -> dict:
        if not isinstance(value, dict):
            raise InvalidArgument(f"{term(field)} must be a map, not {type(value).__name__}")
        return fields(value, schema, optional, where=f"{field}.")
    return check


def fields(obj: dict, required: dict[str, Check], optional: dict[str, Check] | None = None,
            where: str = "") -> dict:
    """Validate `obj` against a schema: no unknown or missing fields, every value well-typed."""
    optional = optional or {}
    for name in obj:
        if name not in required and name not in optional:
            raise InvalidArgument(f"unknown field {where}{show(name)} in a command")
    for name in required:
        if name not in obj:
            raise InvalidArgument(f"a command is missing its {term(where + name)}")
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
        raise InvalidArgument("client id, sequence number and acknowledged sequence number must "
                              "come together")
    session = Session(*(check(name, command[name]) for name, check in SESSION.items()))
    if session.ack_seq >= session.seq:
        raise InvalidArgument(f"acknowledged sequence number {session.ack_seq} must be less than "
                              f"sequence number {session.seq}")
    return session

