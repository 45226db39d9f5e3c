"""Path rules of the gfs namespace.

A path is absolute and `/`-separated: `/` is the root, every other path is `/name(/name)*`.
Names are non-empty, are not `.` or `..`, contain no NUL byte and are at most 255 UTF-8 bytes;
a whole path is at most 4096 UTF-8 bytes. Nothing is rewritten: a path that breaks a rule is
rejected with `InvalidArgument`, never silently "fixed", so every replica and every client agree
on what a given string names.
"""
from __future__ import annotations

import re

from gfs.errors import InvalidArgument

ROOT = "/"
SEP = "/"
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
_SHOW_CHARS = 60


def _show(text: str) -> str:
    """A short, one-line rendering of `text` for error messages; bytes that are not UTF-8 (as
    Python decodes them from a Linux command line or file name) show as \\xNN."""
    if len(text) > _SHOW_CHARS:
        return _escaped(text[:_SHOW_CHARS]) + f"... ({len(text)} characters)"
    return _escaped(text)


def _escaped(text: str) -> str:
    return re.sub(r"\\udc([89a-f][0-9a-f])", r"\\x\1", repr(text))


def utf8(text: str, what: str = "path") -> str:
    """`text` unchanged if it can be sent (UTF-8 encodable), else InvalidArgument naming it:
    for local names that become gfs paths, and before any request is built."""
    _utf8_length(text, what)
    return text


def _utf8_length(text: str, what: str) -> int:
    """Length of `text` in UTF-8; InvalidArgument if it cannot be encoded (lone surrogates)."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgument(f"{what} {_show(text)} is not valid UTF-8 (gfs names are UTF-8 "
                              "text)") from None


def check_name(name: str) -> str:
    """Validate one path component and return it unchanged."""
    if not isinstance(name, str):
        raise InvalidArgument(f"a name must be a str, not {type(name).__name__}")
    if name == "":
        raise InvalidArgument("a name must not be empty")
    if name in (".", ".."):
        raise InvalidArgument(f"{name!r} is not allowed as a name")
    if SEP in name:
        raise InvalidArgument(f"name {_show(name)} contains '/'")
    if "\0" in name:
        raise InvalidArgument(f"name {_show(name)} contains a NUL byte")
    if _utf8_length(name, "name") > MAX_NAME_BYTES:
        raise InvalidArgument(f"name {_show(name)} is longer than {MAX_NAME_BYTES} UTF-8 bytes")
    return name


def normalize(path: str, what: str = "path") -> str:
    """Validate `path` and return it (valid paths are already in normal form); `what` names it
    in error messages ("destination path", ...)."""
    if not isinstance(path, str):
        raise InvalidArgument(f"a {what} must be a str, not {type(path).__name__}")
    if path == "":
        raise InvalidArgument(f"a {what} must not be empty")
    if "\0" in path:
        raise InvalidArgument(f"{what} {_show(path)} contains a NUL byte")
    if not path.startswith(SEP):
        raise InvalidArgument(f"{what} {_show(path)} is not absolute (must start with '/')")
    if _utf8_length(path, what) > MAX_PATH_BYTES:
        raise InvalidArgument(f"{what} {_show(path)} is longer than {MAX_PATH_BYTES} UTF-8 bytes")
    if path == ROOT:
        return path
    for name in path[1:].split(SEP):
        if name == "":
            raise InvalidArgument(f"{what} {_show(path)} has an empty name ('//' or a trailing '/')")
        if name in (".", ".."):
            raise InvalidArgument(f"{what} {_show(path)} has a {name!r} component")
        if len(name.encode("utf-8")) > MAX_NAME_BYTES:
            raise InvalidArgument(f"{what} {_show(path)} has a name longer than {MAX_NAME_BYTES} UTF-8 bytes")
    return path


def as_typed(text: str, what: str = "path") -> tuple[str, bool]:
    """A path as a person types it, the way shell tools take it: trailing slashes mean "a
    directory" and are dropped ('/d/' -> '/d'). Returns (the gfs path, whether it was written
    as a directory); the path is otherwise validated like `normalize`."""
    stripped = text.rstrip(SEP) if isinstance(text, str) else text
    if stripped == "" and isinstance(text, str) and text:
        return ROOT, True
    return normalize(stripped, what), stripped != text


def components(path: str) -> list[str]:
    """The names along `path`, root first: '/' -> [], '/a/b' -> ['a', 'b']."""
    path = normalize(path)
    return [] if path == ROOT else path[1:].split(SEP)


def split(path: str) -> tuple[str, str]:
    """(parent, name) of `path`; the root is ('/', '')."""
    path = normalize(path)
    if path == ROOT:
        return ROOT, ""
    parent, _, name = path.rpartition(SEP)
    return (parent or ROOT), name


def join(parent: str, name: str) -> str:
    """The path of entry `name` inside directory `parent`."""
    parent = normalize(parent)
    check_name(name)
    return normalize(parent + name if parent == ROOT else parent + SEP + name)


def is_same_or_ancestor(a: str, b: str) -> bool:
    """True if `a` is `b` or one of the directories above it."""
    a, b = normalize(a), normalize(b)
    return a == b or a == ROOT or b.startswith(a + SEP)
