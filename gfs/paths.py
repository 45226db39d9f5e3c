"""Path rules of the gfs namespace.

A path is absolute and `/`-separated: `/` is the root, every other path is `/name(/name)*`.
Names are non-empty, are not `.` or `..`, contain no NUL byte and are at most 255 UTF-8 bytes;
a whole path is at most 4096 UTF-8 bytes. Nothing is rewritten: a path that breaks a rule is
rejected with `InvalidArgument`, never silently "fixed", so every replica and every client agree
on what a given string names.
"""
from __future__ import annotations

from gfs.errors import InvalidArgument

ROOT = "/"
SEP = "/"
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
_SHOW_CHARS = 60


def _show(text: str) -> str:
    """A short, one-line rendering of `text` for error messages."""
    if len(text) > _SHOW_CHARS:
        return repr(text[:_SHOW_CHARS]) + f"... ({len(text)} characters)"
    return repr(text)


def _utf8_length(text: str, what: str) -> int:
    """Length of `text` in UTF-8; InvalidArgument if it cannot be encoded (lone surrogates)."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgument(f"{what} {_show(text)} is not valid UTF-8") from None


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


def normalize(path: str) -> str:
    """Validate `path` and return it (valid paths are already in normal form)."""
    if not isinstance(path, str):
        raise InvalidArgument(f"a path must be a str, not {type(path).__name__}")
    if path == "":
        raise InvalidArgument("a path must not be empty")
    if "\0" in path:
        raise InvalidArgument(f"path {_show(path)} contains a NUL byte")
    if not path.startswith(SEP):
        raise InvalidArgument(f"path {_show(path)} is not absolute (must start with '/')")
    if _utf8_length(path, "path") > MAX_PATH_BYTES:
        raise InvalidArgument(f"path {_show(path)} is longer than {MAX_PATH_BYTES} UTF-8 bytes")
    if path == ROOT:
        return path
    for name in path[1:].split(SEP):
        if name == "":
            raise InvalidArgument(f"path {_show(path)} has an empty component ('//' or a trailing '/')")
        if name in (".", ".."):
            raise InvalidArgument(f"path {_show(path)} has a {name!r} component")
        if len(name.encode("utf-8")) > MAX_NAME_BYTES:
            raise InvalidArgument(f"path {_show(path)} has a name longer than {MAX_NAME_BYTES} UTF-8 bytes")
    return path


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
