"""The `gfs` command."""
from __future__ import annotations

import json
import os
import stat as statmod
import sys
import time

import click

# gRPC's C core prints its own unstructured error lines to stderr; every failure reaches the user
# (or the JSON log) as a gfs error anyway. GRPC_VERBOSITY=debug brings them back for debugging.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

from cli.daemon_config import config_option
from cli.test_hooks import refuse_wrong_planted_bug, test_clock_option
from cli.tiers import tier_set_summary
from cli.remote import (is_remote_dir, local_name_as_remote, missing_parent_error,
                        move_targets, remote_path, stat_if_dir_meant)
from gfs.config import record_cluster, recorded_cluster_file
from gfs.paths import as_typed, join, split
from gfs.errors import FailedPrecondition, InvalidArgument, NotFound
from gfs.fsutil import makedirs_durable
from gfs.memory import reuse_large_buffers
from gfs.units import human_size
from cli import (gateway_commands, identity_commands, lb_commands, mount_commands,
                 oidc_commands, route_commands, snapshot_commands)
from cli.common import CONTEXT, GfsGroup, Progress, emit_json, format_time, make_client

EXIT_CODES = """\b
Exit status:
  0    success
  1    an error, told in one line on stderr: `gfs: <kind>: <what>`
  2    a usage error (an unknown option, a missing argument), or `admin health --check`
       finding the cluster not healthy
  130  interrupted (Ctrl-C)"""


@click.group(cls=GfsGroup, context_settings={**CONTEXT, "auto_envvar_prefix": "GFS"},
             epilog=EXIT_CODES)
@click.option("--masters", envvar="GFS_MASTERS", metavar="HOST:PORT,...",
              help="Master gRPC addresses (default: $GFS_MASTERS, else the cluster that "
                   "`gfs cluster up` started last).")
@click.option("--timeout", type=float, default=30.0, show_default=True, envvar="GFS_TIMEOUT",
              help="Overall deadline in seconds for each operation, retries included (while "
                   "masters answer but elect a leader; when none can be reached at all, "
                   "commands fail after about a second).")
@click.option("--token", envvar="GFS_TOKEN", metavar="gfs_...",
              help="Bearer token to act with (default: $GFS_TOKEN, else the one `gfs login` or "
                   "`gfs cluster up` remembered; none: anonymous, which sees only public files).")
@click.option("--tls-ca", envvar="GFS_TLS_CA", type=click.Path(dir_okay=False), metavar="FILE",
              help="CA certificate to verify a TLS cluster with (default: the one the last "
                   "`gfs cluster up --tls` recorded).")
@click.version_option(package_name="gfs")
@click.pass_context
def cli(ctx: click.Context, masters: str | None, timeout: float, token: str | None,
        tls_ca: str | None) -> None:
    """gfs: a distributed file system for a few machines you own."""
    ctx.ensure_object(dict)
    ctx.obj["masters"] = masters
    ctx.obj["timeout"] = timeout
    ctx.obj["token"] = token
    ctx.obj["tls_ca"] = tls_ca


# --- namespace commands -------------------------------------------------------------------------

def format_mode(info) -> str:
    kind = statmod.S_IFDIR if info.is_dir else statmod.S_IFREG
    return statmod.filemode(kind | (info.mode & 0o7777))


@cli.command()
@click.option("-p", "--parents", is_flag=True, help="Create missing parents; no error if it exists.")
@click.option("--mode", default="755", show_default=True, help="Permission bits, octal.")
@click.argument("paths", nargs=-1, required=True)
@click.pass_context
def mkdir(ctx, parents: bool, mode: str, paths: tuple[str, ...]) -> None:
    """Create directories."""
    with make_client(ctx) as c:
        for p in paths:
            c.mkdir(remote_path(p), parents=parents, mode=int(mode, 8))


@cli.command()
@click.option("-l", "long", is_flag=True,
              help="Long listing: mode, replication, owner, visibility, size, time, name.")
@click.option("-H", "--human/--bytes", "human", default=True, help="Human sizes in -l output.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.argument("path", default="/")
@click.pass_context
def ls(ctx, long: bool, human: bool, as_json: bool, path: str) -> None:
    """List a directory (or show a file)."""
    with make_client(ctx) as c:
        # The JSON has what stat --json has (chunks included); the text needs no chunk lists.
        entries = list(c.list(stat_if_dir_meant(c, path), brief=not as_json))
    if as_json:
        emit_json([e.to_dict() for e in entries])       # the same attributes as stat --json
        return
    for e in entries:
        name = e.path.rsplit("/", 1)[-1] or "/"
        if e.is_dir:
            name += "/"
        if long:
            size = human_size(e.size) if human else str(e.size)
            click.echo(f"{format_mode(e)} {e.replication or '-':>2} {e.owner or '-':<10} "
                       f"{e.visibility:<8} {size:>10} {format_time(e.mtime_ms)} {name}")
        else:
            click.echo(name)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.argument("path")
@click.pass_context
def stat(ctx, as_json: bool, path: str) -> None:
    """Show a file's or directory's attributes."""
    with make_client(ctx) as c:
        info = c.stat(stat_if_dir_meant(c, path))
    if as_json:
        emit_json(info.to_dict())
        return
    rows = [("path", info.path), ("type", info.type), ("inode", info.inode),
            ("size", f"{info.size} ({human_size(info.size)})"), ("mode", format_mode(info)),
            ("owner", info.owner or "-"), ("visibility", info.visibility),
            ("modified", format_time(info.mtime_ms)),
            ("created", format_time(info.ctime_ms))]
    if not info.is_dir:
        rows += [("replication", info.replication), ("storage class", info.storage_class),
                 ("chunk size", human_size(info.chunk_size)), ("chunks", len(info.chunks))]
    for k, v in rows:
        click.echo(f"{k + ':':<15}{v}")


@cli.command()
@click.option("-f", "--force", is_flag=True, help="Replace an existing destination file.")
@click.option("-T", "--no-target-directory", "no_target_dir", is_flag=True,
              help="Treat DEST as the new name even when it is a directory (replacing an "
                   "empty directory needs -f).")
@click.argument("sources", nargs=-1, required=True, metavar="SOURCE...")
@click.argument("dest")
@click.pass_context
def mv(ctx, force: bool, no_target_dir: bool, sources: tuple[str, ...], dest: str) -> None:
    """Rename SOURCE to DEST, or move SOURCEs into the directory DEST (as GNU mv). Each
    rename is atomic."""
    with make_client(ctx) as c:
        for src, dst in move_targets(c, list(sources), dest, no_target_dir):
            c.rename(src, dst, overwrite=force)


@cli.command()
@click.option("-r", "--recursive", is_flag=True, help="Remove directories and their contents.")
@click.option("--skip-trash", is_flag=True,
              help="Delete for good now instead of moving to your trash.")
@click.argument("paths", nargs=-1, required=True)
@click.pass_context
def rm(ctx, recursive: bool, skip_trash: bool, paths: tuple[str, ...]) -> None:
    """Remove files or directories (into your trash: see `gfs trash --help`)."""
    with make_client(ctx) as c:
        for p in paths:
            c.delete(stat_if_dir_meant(c, p), recursive=recursive, skip_trash=skip_trash)


# --- trash -----------------------------------------------------------------------------------

@cli.group(context_settings=CONTEXT)
def trash() -> None:
    """Files removed with `gfs rm`, kept for the cluster's trash retention (default 24 h).

    Trash is per user: what you remove goes to your own trash."""


def format_eta(seconds: float) -> str:
    if seconds < 0:
        return "unknown"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


@trash.command("ls")
@click.option("--all-users", is_flag=True, help="Every user's trash.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def trash_ls(ctx, all_users: bool, as_json: bool) -> None:
    """List trash entries, oldest first."""
    with make_client(ctx) as c:
        entries = c.trash_list(all_users=all_users)
    if as_json:
        emit_json(entries)
        return
    now = time.time() * 1000
    for e in entries:
        expires = format_eta((e["expires_ms"] - now) / 1000) if e["expires_ms"] else "never"
        user = f"{e['user']:<12}" if all_users else ""
        click.echo(f"{e['id']:>6}  {format_time(e['deleted_ms'])}  expires in {expires:<8}"
                   f"{human_size(e['size']):>11}  {user}{e['path']}{'/' if e['type'] == 'dir' else ''}")


def _trash_entry(c, what: str) -> dict:
    """A trash entry by id, or the most recently deleted one with this path."""
    entries = c.trash_list()
    if what.isdigit():
        found = [e for e in entries if e["id"] == int(what)]
    else:
        path = remote_path(what)
        found = [e for e in entries if e["path"] == path]
    if not found:
        raise NotFound(f"nothing in your trash matches {what} (see `gfs trash ls`)")
    return found[-1]


@trash.command("restore")
@click.option("--to", "dst", default="", metavar="PATH",
              help="Restore to this path instead of where it was.")
@click.argument("entry", metavar="PATH|ID")
@click.pass_context
def trash_restore(ctx, dst: str, entry: str) -> None:
    """Bring back a deleted file or directory (the latest one deleted from PATH, or entry ID)."""
    with make_client(ctx) as c:
        path = c.trash_restore(_trash_entry(c, entry)["id"],
                               remote_path(dst, "destination path") if dst else "")
    click.echo(f"restored {path}")


@trash.command("purge")
@click.option("--all-users", is_flag=True, help="Every user's trash (administrators).")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.argument("entries", nargs=-1, metavar="[PATH|ID]...")
@click.pass_context
def trash_purge(ctx, all_users: bool, yes: bool, entries: tuple[str, ...]) -> None:
    """Delete trash entries for good now (everything in your trash when none are given)."""
    with make_client(ctx) as c:
        ids = [_trash_entry(c, e)["id"] for e in entries]
        if not ids and not yes:
            whose = "every user's" if all_users else "your"
            if not sys.stdin.isatty():
                raise OneLineUsageError(f"deleting everything in {whose} trash for good needs "
                                        "confirmation and standard input is not a terminal: "
                                        "use --yes")
            click.confirm(f"Delete everything in {whose} trash for good?", abort=True, err=True)
        purged = c.trash_purge(ids, all_users=all_users)
    click.echo(f"purged {purged} entr{'y' if purged == 1 else 'ies'}")


# --- storage classes -------------------------------------------------------------------------

@cli.group(context_settings=CONTEXT)
def tier() -> None:
    """Storage classes: hot (raw, hot tier), cold (zstd, cold tier), auto (cold after
    --auto-cold-after without reads, hot again when read). Directories pass theirs on to new
    files and directories created in them."""


@tier.command("set")
@click.option("-r", "--recursive", is_flag=True,
              help="Also every file and directory already below a directory.")
@click.argument("path")
@click.argument("storage_class", metavar="CLASS", type=click.Choice(["hot", "cold", "auto", "none"]))
@click.pass_context
def tier_set(ctx, recursive: bool, path: str, storage_class: str) -> None:
    """Set the storage class of PATH (`none`: a directory passes no class on).

    On a directory, the class is for what is created in it from now on: files already in it
    keep theirs unless -r is given (the output says so). Chunks move between tiers in the
    background; `gfs tier status PATH` shows the progress."""
    cls = "" if storage_class == "none" else storage_class
    with make_client(ctx) as c:
        path = stat_if_dir_meant(c, path)
        changed = c.set_class(path, cls, recursive)
        is_dir = c.stat(path).is_dir
        kept = is_dir and not recursive and next(iter(c.list(path, page_size=1)), None)
    click.echo(tier_set_summary(path, storage_class, is_dir, recursive, changed, bool(kept)))


@tier.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.argument("path")
@click.pass_context
def tier_status(ctx, as_json: bool, path: str) -> None:
    """Storage class of PATH and where its chunks' replicas are (hot or cold tier)."""
    with make_client(ctx) as c:
        st = c.tier_status(stat_if_dir_meant(c, path))
    if as_json:
        emit_json(st)
        return
    click.echo(f"{st['path']}: class {st['storage_class'] or 'none'}")
    saved = (f"; on disk {human_size(st['stored_bytes'])} for "
             f"{human_size(st['replica_bytes'])} of replicas "
             f"({st['stored_bytes'] / st['replica_bytes']:.2f})") if st["replica_bytes"] else ""
    if st["type"] == "dir":
        click.echo(f"{st['files']} files: {human_size(st['hot_bytes'])} hot, "
                   f"{human_size(st['cold_bytes'])} cold (all replicas), "
                   f"{human_size(st['moving_bytes'])} waiting to move{saved}")
        return
    last = format_time(st["last_read_ms"]) if st["last_read_ms"] else "never"
    click.echo(f"wanted in the {st['target_tier']} tier; last read {last}, "
               f"{st['recent_reads']} recent reads{saved}")
    for ch in st["chunks"]:
        where = ", ".join(f"{r['address']} {r['tier']}" for r in ch["replicas"]) or "no replica"
        click.echo(f"  chunk {ch['index']:>4} {human_size(ch['length']):>10}  {where}")


# --- administration --------------------------------------------------------------------------

@cli.group(context_settings=CONTEXT)
def admin() -> None:
    """Cluster health and maintenance."""


@admin.command("health")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--check", is_flag=True, help="Exit with status 2 unless the cluster is healthy.")
@click.pass_context
def admin_health(ctx, as_json: bool, check: bool) -> None:
    """Chunkservers alive and dead, chunks short of replicas, corrupt/stale/orphan replicas,
    and the repair queue with an estimate of the time to full redundancy, or why repair is
    blocked (no chunkserver with room, or fewer chunkservers than the replication)."""
    with make_client(ctx) as c:
        h = c.health()
    if as_json:
        emit_json(h)
    else:
        dead = f" ({', '.join(h['dead'])})" if h["dead"] else ""
        eta = "" if not h["repair_bytes_pending"] else (
            f", {human_size(h['repair_bytes_pending'])} to copy at "
            f"{human_size(h['repair_rate_bytes_s'])}/s, ETA {format_eta(h['eta_s'])}")
        click.echo(f"status        {h['status']}"
                   + ("" if h["replica_map_complete"] else
                      f" (leader elected {h['leader_for_s']:.0f}s ago; still hearing reports)"))
        silent = "" if not h["silent"] else " ({} silent: {})".format(len(h["silent"]), ", ".join(
            f"{s['address']} for {s['for_s']:.0f}s" for s in h["silent"]))
        click.echo(f"chunkservers  {h['chunkservers_alive']} alive{silent}, "
                   f"{len(h['dead'])} dead{dead}")
        click.echo(f"chunks        {h['chunks']}: {h['under_replicated']} under-replicated "
                   f"({h['at_risk']} with one replica, {h['unavailable']} with none)")
        click.echo(f"replicas      {h['corrupt_replicas']} corrupt, {h['stale_replicas']} stale, "
                   f"{h['orphan_replicas']} orphan, {h['surplus_replicas']} surplus")
        click.echo(f"repair        {h['repair_queue']} queued, {h['repair_in_flight']} copying{eta}; "
                   f"{h['repaired']} done, {h['repair_failures']} failed")
        if h["repair_blocked"]:
            click.echo(f"blocked       {h['repair_blocked']} chunks: {h['repair_blocked_detail']}")
        click.echo(f"disk use      {h['disk_use']:.1%} of the live chunkservers' capacity"
                   + (f"; {h['trash_purged_for_space']} trash entries purged for space"
                      if h["trash_purged_for_space"] else ""))
        click.echo(f"uploads       {h['pending_uploads']} in progress")
        click.echo(f"trash         {h['trash_entries']} entries, {human_size(h['trash_bytes'])}")
        click.echo(f"sessions      {h['session_results']} exactly-once results kept")
        click.echo(f"auth          {h['auth_mode']}"
                   + (" (NOTHING is authenticated)" if h["auth_mode"] == "insecure-no-auth"
                      else ""))
    if check and h["status"] != "healthy":
        sys.exit(2)


@admin.command("gc")
@click.option("--plan", is_flag=True,
              help="Only list orphan and stale replicas and when each goes; delete nothing.")
@click.option("--limit", default=0, type=int, help="Show at most this many (0: all).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def admin_gc(ctx, plan: bool, limit: int, as_json: bool) -> None:
    """Garbage collection: replicas no file references are deleted once they have been
    unreferenced for the grace period (master --gc-grace), stale replicas at once. Without
    --plan, a collection pass runs now (the grace period still applies)."""
    with make_client(ctx) as c:
        p = c.gc_plan(limit=limit, collect=not plan)
    if as_json:
        emit_json(p)
        return
    click.echo(f"{p['total']} replicas to delete (grace period {format_eta(p['grace_s'])}); "
               f"{p['pending_uploads']} uploads in progress, {p['expiring_uploads']} abandoned")
    if p["orphans"]:
        click.echo(f"{'HANDLE':>10} {'VER':>4}  {'SERVER':<22}{'REASON':<8}{'AGE':>8}  DELETED IN")
    for o in p["orphans"]:
        due = "now" if o["delete_in_s"] <= 0 else format_eta(o["delete_in_s"])
        click.echo(f"{o['handle']:>10} {o['version']:>4}  {o['server']:<22}{o['reason']:<8}"
                   f"{format_eta(o['age_s']):>8}  {due}")


@admin.command("rotate-keys")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def admin_rotate_keys(ctx, as_json: bool) -> None:
    """Make a new chunk-capability key. Capabilities signed with the previous key stay valid
    until they expire (--capability-ttl); the one before that is no longer accepted."""
    with make_client(ctx) as c:
        key_id = c.rotate_keys()
    if as_json:
        emit_json({"key_id": key_id})
    else:
        click.echo(f"capability key {key_id} is current")


@admin.command("balance")
@click.option("--status", "show_status", is_flag=True, default=True,
              help="Show the balancer's state (the default and only action: balancing itself "
                   "runs on the leader, see master --balance-*).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def admin_balance(ctx, show_status: bool, as_json: bool) -> None:
    """Disk use per chunkserver and the balancer that evens it out: chunks move from the
    fullest to the emptiest chunkserver while their use differs by more than the threshold."""
    with make_client(ctx) as c:
        b = c.balance_status()
    if as_json:
        emit_json(b)
        return
    reason = f" ({b['reason']})" if b["reason"] else ""
    click.echo(f"state      {b['state']}{reason}")
    click.echo(f"spread     {b['spread'] * 100:.1f} points (threshold {b['threshold'] * 100:g})")
    limit = human_size(b["rate_limit_bytes_s"]) + "/s" if b["rate_limit_bytes_s"] else "none"
    eta = "" if not b["bytes_to_move"] else (
        f"; about {human_size(b['bytes_to_move'])} to move, ETA {format_eta(b['eta_s'])}")
    click.echo(f"moves      {b['moves_in_flight']} running, {b['moved']} done "
               f"({human_size(b['moved_bytes'])}), {b['failures']} failed; "
               f"{human_size(b['rate_bytes_s'])}/s (limit {limit}){eta}")
    click.echo(f"{'CHUNKSERVER':<24}{'USE':>7}{'CAPACITY':>11}{'FREE':>11}{'CHUNKS':>8}  MOVING")
    for s in b["servers"]:
        moving = f"{s['moving_out']} out, {s['moving_in']} in" if (
            s["moving_out"] or s["moving_in"]) else ""
        click.echo(f"{s['address']:<24}{s['use'] * 100:>6.1f}%{human_size(s['capacity_bytes']):>11}"
                   f"{human_size(s['free_bytes']):>11}{s['chunk_count']:>8}  {moving}")


# --- data --------------------------------------------------------------------------------------

def local_size(path: str) -> int | None:
    try:
        return os.path.getsize(path) if path != "-" else None
    except OSError:
        return None


progress_option = click.option("--progress/--no-progress", default=None,
                               help="Show a progress bar (default: when stderr is a terminal).")


@cli.command()
@click.option("-r", "--replication", type=click.IntRange(0, 16), default=0,
              help="Copies of each chunk [default: the cluster's].")
@click.option("--chunk-size", default=None, help="Chunk size, e.g. 64MiB [default: the cluster's].")
@click.option("--class", "storage_class", type=click.Choice(["hot", "cold", "auto"]),
              default=None, help="Storage class.")
@click.option("-f", "--force", is_flag=True, help="Replace an existing file.")
@click.option("-p", "--parents", is_flag=True, help="Create REMOTE's missing directories.")
@click.option("--json", "as_json", is_flag=True, help="Print the new file's attributes as JSON.")
@progress_option
@click.argument("local")
@click.argument("remote")
@click.pass_context
def put(ctx, replication, chunk_size, storage_class, force, parents, as_json, progress, local,
        remote):
    """Upload LOCAL (a file, or - for stdin) to REMOTE (a path, or a directory to put it in).
    The file appears only when complete."""
    from gfs.units import parse_size
    if local != "-" and not os.path.isfile(local):
        if not os.path.exists(local):
            raise NotFound(f"local file {local} does not exist")
        raise InvalidArgument(f"{local} is not a regular file")
    source = sys.stdin.buffer if local == "-" else local
    reuse_large_buffers()
    with make_client(ctx) as c, Progress(progress, local_size(local), "put") as bar:
        remote, into = as_typed(remote, "destination path")
        if into or is_remote_dir(c, remote):
            if local == "-":
                raise InvalidArgument("standard input has no name to put into a directory: give "
                                      f"the new file's full path, e.g. {join(remote, 'NAME')}")
            remote = join(remote, local_name_as_remote(local))
        if parents:
            c.mkdir(split(remote)[0], parents=True)
        try:
            info = c.put(source, remote, replication=replication, overwrite=force,
                         chunk_size=parse_size(chunk_size) if chunk_size else 0,
                         storage_class=storage_class or "", progress=bar)
        except NotFound as err:
            raise missing_parent_error(c, remote) or err from None
    if as_json:
        emit_json(info.to_dict())


@cli.command()
@click.option("--offset", type=click.IntRange(0), default=0, help="First byte to read.")
@click.option("--length", type=click.IntRange(-1), default=-1,
              help="Bytes to read [default: -1, to the end].")
@progress_option
@click.argument("remote")
@click.argument("local")
@click.pass_context
def get(ctx, offset, length, progress, remote, local):
    """Download REMOTE to LOCAL (a file, a directory, or - for stdout). Every byte is
    checksum-verified."""
    remote = remote_path(remote)
    if local != "-" and os.path.isdir(local):
        local = os.path.join(local, split(remote)[1])
    sink = sys.stdout.buffer if local == "-" else local
    reuse_large_buffers()
    with make_client(ctx) as c:
        size = c.stat(remote).size if progress is not False else None
        with Progress(progress, size, "get") as bar:
            c.get(remote, sink, offset=offset, length=length, progress=bar)


@cli.command()
@click.argument("remotes", nargs=-1, required=True)
@click.pass_context
def cat(ctx, remotes):
    """Write files to stdout."""
    reuse_large_buffers()
    with make_client(ctx) as c:
        for r in remotes:
            c.get(remote_path(r), sys.stdout.buffer)


# --- daemons ------------------------------------------------------------------------------------

cluster_secret_option = click.option(
    "--cluster-secret-file", "cluster_secret_file", envvar="GFS_CLUSTER_SECRET_FILE",
    type=click.Path(dir_okay=False), metavar="FILE",
    help="The cluster secret shared by all masters and chunkservers (required; "
         "`gfs cluster up` writes DIR/cluster.secret).")


INSECURE_BANNER = ("WARNING: this cluster runs with --insecure-no-auth: nobody is "
                   "authenticated, anyone who reaches a port is an administrator")
insecure_option = click.option(
    "--insecure-no-auth", "insecure_no_auth", is_flag=True, envvar="GFS_INSECURE_NO_AUTH",
    help="INSECURE, for benchmarks and throwaway experiments only: authenticate nobody (every "
         "caller is an administrator), neither sign nor check daemon requests and chunk "
         "capabilities. Daemons without it refuse to work with those that have it.")


def tls_options(command):
    """--tls-cert/--tls-key/--tls-ca of a daemon: serve gRPC over TLS, verify other daemons."""
    for name, what in (("ca", "CA certificate (PEM) other daemons' certificates are checked "
                               "against"),
                       ("key", "private key (PEM) of --tls-cert"),
                       ("cert", "certificate (PEM) this daemon serves gRPC with")):
        command = click.option(f"--tls-{name}", f"tls_{name}", type=click.Path(dir_okay=False),
                               metavar="FILE", help=f"TLS: {what}; all three or none.")(command)
    return command

@cli.group(invoke_without_command=True, context_settings=CONTEXT)
@config_option("master")
@click.option("--id", "node_id", type=int, help="This master's id (1..N).")
@click.option("--raft", "raft_addr", metavar="HOST:PORT", help="Raft address of this master.")
@click.option("--peers", metavar="RAFT[@GRPC],...",
              help="Every master's Raft address (this one included), each optionally with "
                   "@its gRPC address so followers can redirect clients to the leader. Read at "
                   "the first start only: the group's membership is then kept in --data and "
                   "changed with `gfs master add/remove`.")
@click.option("--grpc", "grpc_addr", metavar="HOST:PORT", help="gRPC listen address.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), help="Data directory.")
@click.option("--metrics", "metrics_addr", default="127.0.0.1:0", show_default=True,
              metavar="HOST:PORT", help="Prometheus /metrics listen address.")
@click.option("--election-timeout", default=1.0, show_default=True, type=float,
              help="Minimum Raft election timeout, seconds (maximum is twice this).")
@click.option("--heartbeat", default=0.05, show_default=True, type=float,
              help="Leader heartbeat interval, seconds.")
@click.option("--compact-entries", default=50_000, show_default=True, type=int,
              help="Snapshot and compact the Raft log after this many entries (or 10 "
                   "minutes); a store over 64 MiB also waits for a log of a quarter of its "
                   "size, at most 64 MiB.")
@click.option("--commit-delay", default=0.01, show_default=True,
              type=click.FloatRange(0, 1), envvar="GFS_COMMIT_DELAY",
              help="Seconds an applied log entry may wait before LMDB commits it with the "
                   "entries applied after it (one fdatasync for them all; the Raft journal "
                   "already holds them). Reads that need it commit it at once. 0: commit "
                   "after every pass of the Raft thread.")
@click.option("--read-mode", type=click.Choice(["index", "lease"]), default="index",
              show_default=True, envvar="GFS_READ_MODE",
              help="How the leader proves a linearizable read current: `index` confirms its "
                   "leadership with one message round to a majority (shared by every read "
                   "waiting), `lease` skips the round while a majority answered within 3/4 of "
                   "--election-timeout (assumes the masters' clocks run at rates within 33 % of "
                   "each other; docs/raft.md). Give every master the same mode.")
@click.option("--replication", default=3, show_default=True, type=click.IntRange(1, 16),
              help="Default replication factor for new files.")
@click.option("--chunk-size", default="64MiB", show_default=True,
              help="Default chunk size for new files.")
@click.option("--inline-max", default="64KiB", show_default=True, envvar="GFS_INLINE_MAX",
              help="Files up to this size are stored inline in the metadata: written by one "
                   "command, read by one (at most 1MiB; 0: off).")
@click.option("--dead-after", default=10.0, show_default=True, type=float,
              help="Seconds without a heartbeat before a chunkserver counts as dead.")
@click.option("--gc-grace", default=3600.0, show_default=True, type=float,
              help="Seconds a chunk must be unreferenced (or an upload idle) before it is "
                   "deleted.")
@click.option("--trash-retention", default=86400.0, show_default=True, type=float,
              help="Seconds `gfs rm` keeps files in the trash (0: rm deletes at once).")
@click.option("--space-pressure", default=90.0, show_default=True,
              type=click.FloatRange(0.0, 100.0),
              help="Disk use (percent, all live chunkservers together) at or above which "
                   "deleted data gives way: recorded garbage goes after --gc-pressure-grace and "
                   "the oldest trash entries are purged (0 or 100: never).")
@click.option("--gc-pressure-grace", default=60.0, show_default=True, type=click.FloatRange(0.0),
              help="Seconds recorded garbage is kept under space pressure (instead of "
                   "--gc-grace).")
@click.option("--repair-concurrency", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Re-replication copies running at once.")
@click.option("--repair-rate", default="0", show_default=True,
              help="Total re-replication bandwidth per second, e.g. 200MiB (0: unthrottled).")
@click.option("--default-class", default="hot", show_default=True,
              type=click.Choice(["hot", "cold", "auto"]),
              help="Storage class of new files whose directory has none.")
@click.option("--auto-cold-after", default=7 * 86400.0, show_default=True, type=float,
              help="Seconds without reads after which `auto` files move to the cold tier.")
@click.option("--auto-warm-reads", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Reads within --auto-warm-window that bring a cold `auto` file back hot.")
@click.option("--auto-warm-window", default=3600.0, show_default=True, type=float,
              help="Seconds over which --auto-warm-reads are counted.")
@click.option("--tier-concurrency", default=2, show_default=True, type=click.IntRange(1, 16),
              help="Tier moves running at once.")
@click.option("--session-ttl", default=86400.0, show_default=True,
              type=click.FloatRange(1.0),
              help="Seconds a command's result is kept for exactly-once retries of a client "
                   "that went away (must exceed any client's --timeout).")
@click.option("--balance/--no-balance", "balance", default=True, show_default=True,
              help="Move chunks between chunkservers to even out their disk use.")
@click.option("--balance-threshold", default=10.0, show_default=True,
              type=click.FloatRange(0.1, 100.0),
              help="Percentage points of disk use between the fullest and the emptiest "
                   "chunkserver above which chunks move.")
@click.option("--balance-rate", default="64MiB", show_default=True,
              help="Total bandwidth of balancing moves per second (0: unthrottled).")
@click.option("--balance-concurrency", default=1, show_default=True,
              type=click.IntRange(1, 16), help="Balancing moves running at once.")
@click.option("--admin-token-file", type=click.Path(dir_okay=False),
              help="A file holding the token of the cluster's first administrator (user `admin`), "
                   "created on the cluster's first start (`gfs cluster up` makes one).")
@cluster_secret_option
@tls_options
@insecure_option
@test_clock_option
@click.option("--capability-ttl", default=60.0, show_default=True, type=click.FloatRange(1.0),
              help="Seconds a chunk read/write capability handed to a client stays valid.")
@click.option("--join", "joining", is_flag=True,
              help="Join a running group (then `gfs master add` it): do not campaign before "
                   "the leader has reached this master. --peers: the current members and this "
                   "one. Later starts use the membership kept in --data.")
@click.pass_context
def master(ctx, node_id, raft_addr, peers, grpc_addr, data_dir, metrics_addr,
           election_timeout, heartbeat, compact_entries, commit_delay, read_mode, replication,
           chunk_size, inline_max, dead_after, gc_grace, trash_retention, space_pressure, gc_pressure_grace,
           repair_concurrency, repair_rate, default_class, auto_cold_after, auto_warm_reads, auto_warm_window,
           tier_concurrency, session_ttl, balance, balance_threshold, balance_rate,
           balance_concurrency, admin_token_file, cluster_secret_file, tls_cert, tls_key, tls_ca,
           insecure_no_auth, capability_ttl, joining) -> None:
    """Run a master daemon (with no subcommand), or inspect and change the masters' group."""
    if ctx.invoked_subcommand is not None:
        return
    refuse_wrong_planted_bug()
    missing = [n for n, v in (("--id", node_id), ("--raft", raft_addr), ("--grpc", grpc_addr),
                              ("--data", data_dir)) if v is None]
    if missing:
        raise click.UsageError("to run a master give " + ", ".join(missing))
    from gfs.auth.secret import load_secret_file
    from gfs.auth.tls import TlsFiles
    from gfs.units import parse_size
    from master.raft import RaftConfig
    from master.server import serve
    secret = load_secret_file(cluster_secret_file)
    tls = TlsFiles.from_flags(tls_cert, tls_key, tls_ca)
    from master.schema import CHUNK_UNIT, chunk_size_rule
    default_chunk = parse_size(chunk_size)
    if default_chunk < CHUNK_UNIT or default_chunk % CHUNK_UNIT:
        raise click.BadParameter(chunk_size_rule(default_chunk), param_hint="--chunk-size")
    from master.inline import HARD_MAX
    inline_bytes = parse_size(inline_max)
    if inline_bytes > HARD_MAX:
        raise click.BadParameter(f"at most {HARD_MAX} bytes (1MiB), not {inline_bytes}",
                                 param_hint="--inline-max")
    cfg = RaftConfig(election_min=election_timeout, election_max=election_timeout * 2,
                     heartbeat=heartbeat, compact_entries=compact_entries, read_mode=read_mode,
                     commit_delay=commit_delay)
    makedirs_durable(data_dir)
    sys.exit(serve(node_id, raft_addr, peers or raft_addr, grpc_addr, data_dir, metrics_addr,
                   cfg, {"replication": replication, "chunk_size": default_chunk,
                         "storage_class": default_class, "inline_max": inline_bytes},
                   dead_after=dead_after, gc_grace=gc_grace, trash_retention=trash_retention,
                   repair_concurrency=repair_concurrency, repair_rate=parse_size(repair_rate),
                   tiering={"cold_after_s": auto_cold_after, "warm_reads": auto_warm_reads,
                            "warm_window_s": auto_warm_window,
                            "concurrency": tier_concurrency},
                   balance={"enabled": balance, "threshold": balance_threshold / 100,
                            "rate_bytes_s": parse_size(balance_rate),
                            "concurrency": balance_concurrency},
                   session_ttl=session_ttl, admin_token_file=admin_token_file,
                   cluster_secret=secret, capability_ttl=capability_ttl, tls=tls,
                   insecure_no_auth=insecure_no_auth, space={"pressure": space_pressure / 100, "pressure_grace_s": gc_pressure_grace},
                   joining=joining))


@cli.command(context_settings=CONTEXT)
@config_option("chunkserver")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False),
              help="Chunk store directory.")
@click.option("--masters", "masters_", required=True, envvar="GFS_MASTERS",
              metavar="HOST:PORT,...", help="Master gRPC addresses.")
@click.option("--bind", default="127.0.0.1:7200", show_default=True, metavar="HOST:PORT",
              help="Where to listen (port 0 picks one); give this host's address (or 0.0.0.0 "
                   "with --advertise-host) to serve other machines.")
@click.option("--advertise-host", metavar="HOST",
              help="Address registered with the masters (default: the --bind host).")
@click.option("--rack", default="", help="Failure-domain label for placement.")
@click.option("--metrics", "metrics_addr", default="127.0.0.1:0", show_default=True,
              metavar="HOST:PORT", help="Prometheus /metrics listen address.")
@click.option("--heartbeat-interval", default=1.0, show_default=True, type=float,
              help="Seconds between heartbeats to the master leader.")
@click.option("--scrub-rate", default="16MiB", show_default=True,
              help="Bytes per second the background scrubber verifies (0: no scrubbing).")
@click.option("--scrub-interval", default=86400.0, show_default=True, type=float,
              help="Seconds between the starts of two full scrub passes.")
@click.option("--cold-dir", type=click.Path(file_okay=False),
              help="Cold tier directory, normally on another disk (default: DATA/cold).")
@click.option("--capacity", default="0", show_default=True,
              help="Most bytes gfs may store here, both tiers, e.g. 500GiB (0: the whole disk); "
                   "new chunks leave the last 2 % to repair copies.")
@cluster_secret_option
@tls_options
@insecure_option
@test_clock_option
def chunkserver(data_dir, masters_, bind, advertise_host, rack, metrics_addr,
                heartbeat_interval, scrub_rate, scrub_interval, cold_dir, capacity,
                cluster_secret_file, tls_cert, tls_key, tls_ca, insecure_no_auth) -> None:
    """Run a chunkserver daemon."""
    refuse_wrong_planted_bug()
    from chunkserver.server import serve
    from gfs.auth.secret import load_secret_file
    from gfs.auth.tls import TlsFiles
    from gfs.config import split_addresses
    makedirs_durable(data_dir)
    if advertise_host is None and bind.startswith("0.0.0.0"):
        raise click.UsageError("--bind 0.0.0.0 needs --advertise-host (the address clients use)")
    from gfs.units import parse_size
    secret = load_secret_file(cluster_secret_file)
    tls = TlsFiles.from_flags(tls_cert, tls_key, tls_ca)
    sys.exit(serve(data_dir, split_addresses(masters_), bind, advertise_host, rack,
                   metrics_addr, heartbeat_interval, scrub_rate=parse_size(scrub_rate),
                   scrub_interval=scrub_interval, cold_dir=cold_dir,
                   capacity=parse_size(capacity), cluster_secret=secret, tls=tls,
                   insecure_no_auth=insecure_no_auth))


@master.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def master_status(ctx, as_json: bool) -> None:
    """Each master's role, term, leader, commit and applied index, log size, last snapshot."""
    from gfs.client import Client
    c = Client(ctx.obj.get("masters"), tls_ca=ctx.obj.get("tls_ca"))
    rows = c.master_statuses()
    c.close()
    if as_json:
        emit_json(rows)
        return
    click.echo(f"{'MASTER':<22}{'ROLE':<10}{'TERM':>6}{'COMMIT':>9}{'APPLIED':>9}{'LOG':>8}"
               f"{'LOG SIZE':>11}{'SNAPSHOT':>10}  LEADER")
    for r in rows:
        if "error" in r:
            click.echo(f"{r['address']:<22}{'down':<10}  {r['error']}")
            continue
        click.echo(f"{r['address']:<22}{r['role']:<10}{r['term']:>6}{r['commit_index']:>9}"
                   f"{r['applied_index']:>9}{r['log_entries']:>8}{human_size(r['log_bytes']):>11}"
                   f"{r['snapshot_index'] or '-':>10}  {r['leader'] or '-'}")
    if all("error" in r for r in rows):
        sys.exit(1)


def _register_init_node() -> None:
    from cli.init_node import make_init_node
    admin.add_command(make_init_node({"master": master, "chunkserver": chunkserver}))


_register_init_node()


def _register_members() -> None:
    from cli.members_commands import register
    register(master)


_register_members()


# --- local cluster ------------------------------------------------------------------------------

def default_data_dir() -> str:
    try:
        return json.loads(recorded_cluster_file().read_text())["data"]
    except (OSError, ValueError, KeyError):
        return os.environ.get("GFS_DATA") or os.path.join(
            os.path.expanduser("~"), ".local", "share", "gfs", "cluster")


def open_cluster(data: str | None, must_exist: bool = True, insecure_no_auth: bool = False):
    from cli.localcluster import LocalCluster
    cluster = LocalCluster(data or default_data_dir(), insecure_no_auth=insecure_no_auth)
    if must_exist and not cluster.exists:
        raise FailedPrecondition(f"no cluster in {cluster.dir} (start one with `gfs cluster up`)")
    return cluster


@cli.group(context_settings=CONTEXT)
def cluster() -> None:
    """Run a whole cluster on this machine as background processes."""


@cluster.command("up")
@click.option("--masters", "n_masters", type=click.Choice(["1", "3", "5"]), default="3",
              show_default=True, help="Number of masters (new cluster only).")
@click.option("--chunkservers", type=click.IntRange(0, 64), default=0, show_default=True,
              help="Number of chunkservers (an existing cluster grows to this many).")
@click.option("--data", type=click.Path(file_okay=False), envvar="GFS_DATA",
              help="Cluster directory [default: $GFS_DATA or ~/.local/share/gfs/cluster].")
@click.option("--tls", is_flag=True,
              help="Serve gRPC over TLS, with a local CA and certificate made in DIR/tls "
                   "(new cluster only).")
@click.option("--s3", "s3_listen", metavar="HOST:PORT", default=None,
              help="Also serve the S3 API here (a gateway with route `s3`; docs/s3.md); kept "
                   "for later starts.")
@click.option("--s3-domain", metavar="DOMAIN", default=None,
              help="With --s3: also answer virtual-host style requests (BUCKET.DOMAIN).")
@insecure_option
@click.option("--json", "as_json", is_flag=True, help="Print the daemons as JSON.")
def cluster_up(n_masters: str, chunkservers: int, data: str | None, tls: bool,
               s3_listen: str | None, s3_domain: str | None, insecure_no_auth: bool,
               as_json: bool) -> None:
    """Start a local cluster (or restart the one in --data, with its data)."""
    if s3_listen:
        host, sep, port = s3_listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise click.BadParameter(f"--s3 must be HOST:PORT, not {s3_listen!r}")
    if s3_domain and not s3_listen:
        raise click.UsageError("--s3-domain goes with --s3 HOST:PORT")
    c = open_cluster(data or os.environ.get("GFS_DATA") or default_data_dir(), must_exist=False,
                     insecure_no_auth=insecure_no_auth)
    if c.exists and c.insecure_no_auth and not insecure_no_auth:
        raise FailedPrecondition(f"the cluster in {c.dir} was created with --insecure-no-auth; "
                                 f"give that flag again to start it (nothing is authenticated)")
    if not c.exists:
        c.create(masters=int(n_masters), chunkservers=chunkservers, tls=tls)
    elif tls and not c.tls:
        raise FailedPrecondition(f"the cluster in {c.dir} was created without TLS")
    while len(c.spec["chunkservers"]) < chunkservers:    # an existing cluster can grow
        c.add_chunkserver()
    if s3_listen:
        if c.insecure_no_auth:
            raise FailedPrecondition("the S3 API needs authentication: not with "
                                     "--insecure-no-auth")
        c.set_s3(s3_listen, s3_domain)
    c.up()
    record_cluster(c.master_addresses(), str(c.dir), c.admin_token, c.tls.ca if c.tls else None)
    rows = c.status()
    if as_json:
        emit_json(rows)
    else:
        click.echo(f"cluster up in {c.dir}: {len(rows)} daemons; masters "
                   f"{','.join(c.master_addresses())}")
        for g in c.spec.get("gateways", []):
            click.echo(f"S3 endpoint: http://{g['listen']} (credentials: gfs token create "
                       f"--name NAME --s3)")
    if c.insecure_no_auth:
        click.echo(INSECURE_BANNER, err=True)


@cluster.command("status")
@click.option("--data", type=click.Path(file_okay=False), help="Cluster directory.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def cluster_status(data: str | None, as_json: bool) -> None:
    """Every daemon with its pid, addresses and health."""
    c = open_cluster(data)
    rows = c.status()
    if as_json:
        emit_json(rows)
    else:
        click.echo(f"{'DAEMON':<16}{'PID':>8}  {'GRPC':<22}{'HEALTH':<12}{'ROLE':<10}{'TERM':>6}"
                   f"{'APPLIED':>9}  AUTH")
        for r in rows:
            click.echo(f"{r['name']:<16}{r['pid'] or '-':>8}  {r['grpc']:<22}{r['health']:<12}"
                       f"{r.get('role', '-'):<10}{r.get('term', '-'):>6}"
                       f"{r.get('applied_index', '-'):>9}  {r.get('auth', '-')}")
    if any(r.get("auth") == "insecure-no-auth" for r in rows):
        click.echo(INSECURE_BANNER, err=True)
    if any(r["health"] != "ok" for r in rows):
        sys.exit(1)


@cluster.command("down")
@click.option("--data", type=click.Path(file_okay=False), help="Cluster directory.")
def cluster_down(data: str | None) -> None:
    """Stop every daemon of the local cluster (data is kept)."""
    c = open_cluster(data)
    c.down()
    click.echo(f"cluster in {c.dir} stopped")


for _command in identity_commands.COMMANDS + mount_commands.COMMANDS:
    cli.add_command(_command)
cli.add_command(oidc_commands.oidc)
cli.add_command(gateway_commands.gateway)
cli.add_command(lb_commands.lb)
cli.add_command(route_commands.route)
admin.add_command(identity_commands.audit)
admin.add_command(snapshot_commands.snapshot)


class OneLineUsageError(click.UsageError):
    """A usage error that is clear without the command's usage line and help hint."""


def main() -> None:
    from gfs.memory import tune_malloc
    tune_malloc()       # daemons keep memory flat; get/put/cat trade that back (reuse_large_buffers)
    try:
        code = cli.main(prog_name="gfs", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as err:
        err.show()                      # `gfs`, `gfs trash`: the help, as click shows it
        sys.exit(err.exit_code)
    except click.UsageError as err:     # one line, and where to read more
        click.echo(f"gfs: {err.format_message()}", err=True)
        if err.ctx is not None and not isinstance(err, OneLineUsageError):
            click.echo(f"Try '{err.ctx.command_path} --help'.", err=True)
        sys.exit(err.exit_code)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.Abort:
        click.echo("gfs: aborted", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
