"""What `gfs tier set` says it did: the class a path now has and, for a directory, what happens
to the files already in it (they keep their class unless -r), so nobody expects a move that is
not coming."""
from __future__ import annotations


def tier_set_summary(path: str, storage_class: str, is_dir: bool, recursive: bool,
                     changed: int, has_entries: bool) -> str:
    """One or two lines for the result of setting `storage_class` ('none' included) on `path`."""
    if not is_dir:
        return (f"{path}: {storage_class} ({changed} changed); its chunks move in the background "
                f"(`gfs tier status {path}` shows them)")
    if recursive:
        what = ("directories below pass no class on; files keep theirs"
                if storage_class == "none" else f"{storage_class}, with everything below it")
        return (f"{path}: {what} ({changed} changed); chunks move in the background "
                f"(`gfs tier status {path}` shows them)")
    new = ("passes no class on: new files get the cluster's default"
           if storage_class == "none" else f"new files and directories created in it are "
                                           f"{storage_class}")
    line = f"{path}: {new} ({changed} changed)"
    if has_entries and storage_class != "none":
        line += (f"\nfiles already in it keep their class: `gfs tier set -r {path} "
                 f"{storage_class}` changes them too")
    return line
