"""`gfs admin snapshot save|restore|verify`: metadata backups and disaster recovery
(docs/disaster-recovery.md)."""
from __future__ import annotations

import json
import os
import sys
import tempfile

import click

from cli.common import CONTEXT, Progress, format_time, make_client
from gfs.units import human_size


@click.group("snapshot", context_settings=CONTEXT)
def snapshot() -> None:
    """Back up the metadata of a running cluster, and make new masters from a backup."""


@snapshot.command("save")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the backup's header as JSON.")
@click.pass_context
def save(ctx, file: str, progress: bool | None, as_json: bool) -> None:
    """Save a consistent, checksummed copy of the cluster's metadata to FILE (`-`: stdout).

    \b
    Administrators only. The copy holds every write acknowledged before the command started,
    and is taken without stalling the cluster. FILE appears only once complete and verified."""
    with make_client(ctx) as c, Progress(progress, None, "backup") as bar:
        if file == "-":
            header = c.backup(sys.stdout.buffer, bar)
            sys.stdout.buffer.flush()
        else:
            folder = os.path.dirname(os.path.abspath(file))
            fd, partial = tempfile.mkstemp(dir=folder, prefix=".gfs-backup-")
            try:
                with os.fdopen(fd, "wb") as out:
                    header = c.backup(out, bar)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(partial, file)
            except BaseException:
                os.unlink(partial)
                raise
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    _describe(header, file, as_json, "saved", err=file == "-")


@snapshot.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the backup's header as JSON.")
def verify(file: str, as_json: bool) -> None:
    """Check a backup file whole (header, length, SHA-256, a readable metadata store)."""
    from gfs.backupfile import verify_and_extract
    from master.state import MetadataState
    with tempfile.TemporaryDirectory() as tmp:
        header = verify_and_extract(file, os.path.join(tmp, "data.mdb"))
        MetadataState.install_copy(os.path.join(tmp, "data.mdb"), os.path.join(tmp, "meta"))
    _describe(header, file, as_json, "verified")


@snapshot.command("restore")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False),
              help="The new master's data directory (empty, or replaced with --force).")
@click.option("--force", is_flag=True, help="Replace the metadata and journal already in --data.")
@click.option("--json", "as_json", is_flag=True, help="Print the backup's header as JSON.")
def restore(file: str, data_dir: str, force: bool, as_json: bool) -> None:
    """Make a new master's data directory from a backup (offline: the master is not running).

    \b
    Restore the same FILE into the data directory of every master of the new group, then start
    them with the same --peers (and the cluster secret the chunkservers use). Chunkservers
    re-register and their chunks are matched to the restored metadata; chunks the backup does
    not reference are left to garbage collection (after its grace period), never deleted at once."""
    from master import backup
    header = backup.restore(file, data_dir, force=force)
    _describe(header, file, as_json, f"restored into {data_dir}")


def _describe(header: dict, file: str, as_json: bool, verb: str, err: bool = False) -> None:
    if as_json:
        click.echo(json.dumps(header, indent=2), err=err)
        return
    click.echo(f"{file}: {verb}: metadata at log index {header['applied_index']}, taken "
               f"{format_time(header['created_ms'])}, {human_size(header['size'])}, "
               f"sha256 {header['sha256'][:16]}…", err=err)
