"""Remote paths as people type them on the command line.

A trailing slash means "a directory", as in every shell tool: `/d/` is the directory `/d`, and
a command given `/f/` for a file says it is not a directory. Names must be UTF-8 (gfs paths are
text); a name that is not (a Latin-1 local file name, `$'\\xff'`) is refused with an error that
shows its bytes.
"""
from __future__ import annotations

from gfs.errors import FailedPrecondition, GfsError
from gfs.paths import as_typed


def remote_path(text: str, what: str = "path") -> str:
    """The gfs path for `text` (trailing slashes dropped)."""
    return as_typed(text, what)[0]


def stat_if_dir_meant(client, text: str):
    """The gfs path for `text`; when it was typed with a trailing slash, it must be a directory."""
    path, as_dir = as_typed(text)
    if as_dir and not client.stat(path).is_dir:
        raise FailedPrecondition(f"{text} is not a directory")
    return path


def is_remote_dir(client, path: str) -> bool:
    try:
        return client.stat(path).is_dir
    except GfsError as err:
        if err.code == "NOT_FOUND":
            return False
        raise
