"""Remote paths as people type them on the command line.

A trailing slash means "a directory", as in every shell tool: `/d/` is the directory `/d`, and
a command given `/f/` for a file says it is not a directory. Names must be UTF-8 (gfs paths are
text); a name that is not (a Latin-1 local file name, `$'\\xff'`) is refused with an error that
shows its bytes.
"""
from __future__ import annotations

import os

from gfs.errors import FailedPrecondition, GfsError, InvalidArgument, NotFound
from gfs.paths import as_typed, join, split, utf8


def remote_path(text: str, what: str = "path") -> str:
    """The gfs path for `text` (trailing slashes dropped)."""
    return as_typed(text, what)[0]


def stat_if_dir_meant(client, text: str):
    """The gfs path for `text`; when it was typed with a trailing slash, it must be a directory."""
    path, as_dir = as_typed(text)
    if as_dir and not client.stat(path).is_dir:
        raise FailedPrecondition(f"{text} is not a directory")
    return path


def local_name_as_remote(local: str) -> str:
    """The name a local file gets in gfs (its base name), if that name is UTF-8."""
    name = os.path.basename(local)
    try:
        return utf8(name, "local file name")
    except InvalidArgument as err:
        raise InvalidArgument(f"{err.message}: give the remote file's full path instead of a "
                              "directory") from None


def is_remote_dir(client, path: str) -> bool:
    try:
        return client.stat(path).is_dir
    except GfsError as err:
        if err.code == "NOT_FOUND":
            return False
        raise


def move_targets(client, sources: list[str], dest: str,
                 no_target_dir: bool) -> list[tuple[str, str]]:
    """(source, destination) gfs paths for `mv SOURCE... DEST`, as GNU mv: into DEST when it is
    an existing directory (or written with a trailing slash), else DEST itself; with
    `no_target_dir` (-T) always DEST itself."""
    dest_path, as_dir = as_typed(dest, "destination path")
    srcs = [stat_if_dir_meant(client, s) for s in sources]
    if no_target_dir:
        if len(srcs) > 1:
            raise InvalidArgument("-T/--no-target-directory takes one source")
        return [(srcs[0], dest_path)]
    into = is_remote_dir(client, dest_path)
    if not into and (as_dir or len(srcs) > 1):
        if client.exists(dest_path):
            raise FailedPrecondition(f"{dest} is not a directory")
        raise NotFound(f"directory {dest_path} does not exist")
    if not into:
        return [(srcs[0], dest_path)]
    return [(s, s if split(s)[0] == dest_path else join(dest_path, split(s)[1])) for s in srcs]


def missing_parent_error(client, path: str) -> NotFound | None:
    """The error for creating `path` when its directory does not exist (None if it does)."""
    parent = split(path)[0]
    if client.exists(parent):
        return None
    return NotFound(f"directory {parent} does not exist (-p/--parents creates it)")
