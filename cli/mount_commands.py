"""`gfs mount` and `gfs umount`: the file system as a FUSE mount (docs/mount.md)."""
from __future__ import annotations

import hashlib
import os

import click

from cli.common import CONTEXT, make_client
from gfs.config import user_config_dir
from gfs.errors import FailedPrecondition
from gfs.units import human_size, parse_size


@click.command(context_settings=CONTEXT)
@click.argument("mountpoint", type=click.Path(file_okay=False))
@click.option("--path", "root", default="/", show_default=True, metavar="GFS_DIR",
              help="The gfs directory the mount shows.")
@click.option("--read-only", is_flag=True, help="Refuse every change (EROFS).")
@click.option("--cache-size", default="256MiB", show_default=True, envvar="GFS_MOUNT_CACHE",
              help="Memory for cached file data, and half as much for bytes of files "
              "being written that wait for their replicas (the mount's bound; metadata is "
              "cached 1 s).")
@click.option("--spool-dir", type=click.Path(file_okay=False), envvar="GFS_MOUNT_SPOOL_DIR",
              metavar="DIR", help="Where files being written are spooled until they are "
              "uploaded (default: $TMPDIR or /tmp). A directory on a disk the chunkservers do "
              "not write to keeps large writes fast.")
@click.option("-f", "--foreground", is_flag=True,
              help="Serve the mount in this process until it is unmounted or interrupted.")
@click.option("--log-file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Where a background mount logs (JSON lines; default: in the gfs config "
                   "directory, named after the mount point).")
@click.pass_context
def mount(ctx, mountpoint: str, root: str, read_only: bool, cache_size: str,
          spool_dir: str | None, foreground: bool, log_file: str | None) -> None:
    """Mount the cluster (or GFS_DIR of it) at MOUNTPOINT, acting as your gfs identity.

    \b
    Files appear whole when closed, as with `gfs put`; fsync returns once the bytes are
    durable on every replica; rm moves to your trash. Unmount: `gfs umount MOUNTPOINT`."""
    from gfs.mount import runner
    cache_bytes = parse_size(cache_size)
    mountpoint = runner.check_mountpoint(mountpoint)
    spool_dir = runner.check_spool_dir(spool_dir) if spool_dir else None
    with make_client(ctx) as client:
        target = client.stat(root)            # reachable, visible to this identity, a directory
        if not target.is_dir:
            raise FailedPrecondition(f"{root} is not a directory")
        user = client.whoami()["user"]
    if foreground:
        _serve(ctx, mountpoint, target.path, read_only, cache_bytes, user, spool_dir)
        return
    log_file = log_file or str(_default_log(mountpoint))
    env = {**os.environ, "GFS_MASTERS": ",".join(client.masters), "GFS_TOKEN": client.token}
    if ctx.obj.get("tls_ca"):
        env["GFS_TLS_CA"] = ctx.obj["tls_ca"]
    argv = runner.python_argv() + ["mount", mountpoint, "--path", target.path,
                                   "--cache-size", str(cache_bytes), "--foreground"] + \
        (["--read-only"] if read_only else []) + (["--spool-dir", spool_dir] if spool_dir else [])
    pid = runner.start_background(argv, mountpoint, log_file, env)  # the token: by env, not argv
    click.echo(f"mounted {target.path} at {mountpoint} as {user or 'anonymous'} "
               f"(pid {pid}, cache {human_size(cache_bytes)}, log {log_file})")


def _serve(ctx, mountpoint: str, root: str, read_only: bool, cache_bytes: int, user: str,
           spool_dir: str | None) -> None:
    from gfs import logs
    from gfs.mount import runner
    from gfs.mount.operations import GfsOperations
    logs.setup("mount")
    client = make_client(ctx)
    try:
        runner.serve(GfsOperations(client, root=root, read_only=read_only,
                                   cache_size=cache_bytes, user=user, spool_dir=spool_dir),
                     mountpoint)
    finally:
        client.close()


def _default_log(mountpoint: str):
    folder = user_config_dir() / "mounts"
    folder.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(mountpoint.encode()).hexdigest()[:12]
    return folder / f"{os.path.basename(mountpoint) or 'root'}-{name}.log"


@click.command(context_settings=CONTEXT)
@click.argument("mountpoint", type=click.Path(file_okay=False))
def umount(mountpoint: str) -> None:
    """Unmount a gfs mount (as `fusermount3 -u MOUNTPOINT`); its files stay in gfs."""
    from gfs.mount import runner
    runner.unmount(mountpoint)
    click.echo(f"unmounted {mountpoint}")


COMMANDS = [mount, umount]
