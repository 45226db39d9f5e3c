"""`gfs admin init-node master|chunkserver`: write the config file of a daemon on this machine.

The subcommands take exactly the daemon's own options (copied from the `gfs master` and
`gfs chunkserver` click commands when the CLI is built), so whatever option a daemon gains can
be written here too. The file gets the options given as settings and every other option as a
commented-out line with its default and help, so an operator sees all there is to set.
"""
from __future__ import annotations

import json
import os
import pwd
from pathlib import Path
from typing import Any

import click

from gfs.errors import FailedPrecondition
from cli.daemon_config import CONFIG_ENV, config_options, env_var, load_config

# What a daemon cannot run without, with the value used when the option is not given.
# None: the operator must give it.
NEEDED: dict[str, dict[str, str | None]] = {
    "master": {"id": None, "raft": None, "grpc": None, "peers": None,
               "data": "/var/lib/gfs/master"},
    "chunkserver": {"masters": None, "bind": None, "data": "/var/lib/gfs/chunkserver"},
}
OWN_OPTIONS = ("output", "force", "owner", "json")


def default_path(role: str) -> str:
    return f"/etc/gfs/{role}.toml"


def toml_value(value: Any) -> str:
    """A TOML literal for a bool, number or string (JSON string escapes are valid TOML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)


def render(role: str, command: click.Command, settings: dict[str, Any]) -> str:
    """The file's text: `settings` (key -> value) as keys, every other option commented out."""
    lines = [f"# gfs {role} configuration: `gfs {role} --config THIS_FILE` (or ${CONFIG_ENV}).",
             "# Precedence: command-line flag > environment variable > this file > default.",
             "# Written by `gfs admin init-node`; every option of the daemon is listed, unset",
             "# ones commented out with their default.", "", f"[{role}]"]
    for key, param in config_options(command).items():
        help_text = " ".join((param.help or "").split())
        if key in settings:
            lines.append(f"{key} = {toml_value(settings[key])}")
            continue
        default = param.get_default(click.Context(command), call=True)
        shown = "" if default is None or repr(default).startswith("Sentinel") else \
            toml_value(default)
        lines.append(f"# {key} = {shown}".rstrip() + f"    # {help_text}  "
                     f"[env {env_var(command, param)}]")
    return "\n".join(lines) + "\n"


def write_private(path: Path, text: str, force: bool, owner: str | None = None) -> None:
    """Write `text` to `path` with mode 0600 (owned by `owner`, a user name, if given),
    atomically; refuse to replace a file unless `force`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not force:
        raise FailedPrecondition(f"{path} exists; use --force to replace it")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        if owner:
            user = pwd.getpwnam(owner)
            os.chown(tmp, user.pw_uid, user.pw_gid)
        if force:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)          # fails if someone created `path` meanwhile
            os.unlink(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _copy_option(param: click.Option) -> click.Option:
    """The daemon's option without its default: only what the user gives is written."""
    decls = list(param.opts)
    if param.secondary_opts:
        decls = ["/".join([param.opts[0]] + list(param.secondary_opts))]
    if param.is_flag:
        return click.Option(decls + [param.name], is_flag=True, default=None, help=param.help)
    return click.Option(decls + [param.name], type=param.type, default=None, help=param.help,
                        metavar=param.metavar)


def make_init_command(role: str, daemon: click.Command) -> click.Command:
    """`init-node ROLE`: the daemon's options plus --output, --force and --json."""
    options = config_options(daemon)
    clash = set(options) & set(OWN_OPTIONS)
    assert not clash, f"gfs {role} options clash with init-node's own: {clash}"

    def run(output: str | None, force: bool, owner: str | None, as_json: bool,
            **given: Any) -> None:
        by_name = {p.name: k for k, p in options.items()}
        settings = {k: v for k, v in NEEDED[role].items() if v is not None}
        settings.update({by_name[n]: v for n, v in given.items() if v is not None})
        missing = [k for k in NEEDED[role] if k not in settings]
        if missing:
            raise click.UsageError(f"a {role} needs " + ", ".join(f"--{k}" for k in missing))
        path = Path(output or default_path(role)).absolute()
        if owner:
            try:
                pwd.getpwnam(owner)
            except KeyError:
                raise click.BadParameter(f"no user {owner!r} on this machine "
                                         "(see deploy/systemd/gfs.sysusers)",
                                         param_hint="--owner") from None
        write_private(path, render(role, daemon, settings), force, owner)
        load_config(path, role, daemon)            # what was written loads back
        if as_json:
            click.echo(json.dumps({"path": str(path), "role": role, "settings": settings}))
        else:
            click.echo(f"wrote {path} (mode 0600); run: gfs {role} --config {path}")

    params = [_copy_option(p) for p in options.values()] + [
        click.Option(["-o", "--output"], metavar="FILE",
                     help=f"Where to write [default: {default_path(role)}]."),
        click.Option(["--force"], is_flag=True, help="Replace an existing file."),
        click.Option(["--owner"], metavar="USER",
                     help="Make USER (the daemon's user, e.g. gfs for the systemd units) own "
                          "the file; it stays 0600."),
        click.Option(["--json", "as_json"], is_flag=True, help="Print JSON.")]
    needed = ", ".join(f"--{k}" for k, v in NEEDED[role].items() if v is None)
    return click.Command(
        role, callback=run, params=params,
        help=f"Write a `gfs {role}` config file (mode 0600, never replacing one without "
             f"--force). Takes every option of `gfs {role}`; needs {needed}. The data "
             f"directory defaults to {NEEDED[role]['data']}.")


def make_init_node(daemons: dict[str, click.Command]) -> click.Group:
    """The `init-node` group with one subcommand per daemon kind."""
    group = click.Group("init-node", help="Write the config file of a daemon on this machine "
                        "(then run it with `gfs master|chunkserver --config FILE`, e.g. from "
                        "the systemd units in deploy/systemd/).",
                        context_settings={"help_option_names": ["-h", "--help"]})
    for role, command in daemons.items():
        group.add_command(make_init_command(role, command))
    return group
