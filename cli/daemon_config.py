"""Configuration files for the daemons: `gfs master --config FILE`, `gfs chunkserver --config FILE`.

A file is TOML with one table per daemon kind, whose keys are the daemon's long option names
without the dashes (every option the command has, derived from the click command itself, so an
option added to the command is accepted in the file at once):

    [master]
    id = 1
    raft = "10.0.0.1:7000"
    peers = ["10.0.0.1:7000@10.0.0.1:7100", "10.0.0.2:7000@10.0.0.2:7100"]
    data = "/var/lib/gfs/master"
    election-timeout = 1.5
    balance = false                 # a --x/--no-x flag is true or false

Precedence, highest first: a command-line flag, its environment variable (GFS_MASTERS, or
click's GFS_<COMMAND>_<NAME>, e.g. GFS_MASTER_ELECTION_TIMEOUT), the file, the built-in
default. The file becomes click's `default_map`, which click consults after the command line and
the environment and before the default. Relative paths in the file are relative to the file's
directory. An unknown key or table, or a value of the wrong type, is an error naming the file and
the key.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

CONFIG_ENV = "GFS_CONFIG"
SKIPPED_PARAMS = {"config", "help"}


def option_key(param: click.Parameter) -> str:
    """The config-file key of an option: its first long flag without the dashes."""
    longs = [o for o in param.opts if o.startswith("--")]
    return (longs[0] if longs else param.opts[0]).lstrip("-")


def config_options(command: click.Command) -> dict[str, click.Option]:
    """Every option of `command` that a config file may set, by key."""
    return {option_key(p): p for p in command.params
            if isinstance(p, click.Option) and p.name not in SKIPPED_PARAMS
            and not p.hidden and p.expose_value}


def env_var(command: click.Command, param: click.Option, prefix: str = "GFS") -> str:
    """The environment variable click reads for `param` (explicit, else the auto prefix)."""
    if param.envvar:
        return param.envvar if isinstance(param.envvar, str) else param.envvar[0]
    return f"{prefix}_{command.name.upper()}_{param.name.upper()}"


class ConfigError(click.ClickException):
    """A config file that cannot be used: one line naming the file (and the key), exit code 2
    like any other usage error."""

    exit_code = 2


def _convert(path: Path, section: str, key: str, param: click.Option, value: Any) -> Any:
    """Check one value against the option's click type; returns the value click should see."""
    where = f"{path}: [{section}] {key}"
    if isinstance(value, list) and isinstance(param.type, click.types.StringParamType) \
            and all(isinstance(v, str) for v in value):
        value = ",".join(value)           # peers = ["a", "b"] means --peers a,b
    if isinstance(value, (dict, list)):
        raise ConfigError(f"{where}: expected a single value, got a "
                          f"{'table' if isinstance(value, dict) else 'list'}")
    if param.is_flag and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if isinstance(param.type, click.Path) and isinstance(value, str) and value \
            and not os.path.isabs(value):
        value = str(path.parent / value)
    if not param.is_flag:
        try:
            param.type.convert(value, param, None)
        except click.BadParameter as err:
            raise ConfigError(f"{where}: {err.message}") from None
    return value


def load_config(path: str | os.PathLike, section: str, command: click.Command) -> dict[str, Any]:
    """The `[section]` table of the TOML file at `path`, checked against `command`'s options and
    keyed by click parameter name (ready to be the command's default_map)."""
    import difflib      # here, not at the top: every `gfs` command imports this module
    import tomllib

    path = Path(path)
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    unknown_tables = [k for k, v in doc.items() if k != section]
    if section not in doc:
        tables = ", ".join(f"[{k}]" for k in doc) or "nothing"
        raise ConfigError(f"{path}: no [{section}] table (it has {tables})")
    if not isinstance(doc[section], dict):
        raise ConfigError(f"{path}: {section} must be a table: [{section}]")
    known_sections = {"master", "chunkserver", "gateway"}
    for k in unknown_tables:
        if k not in known_sections:
            raise ConfigError(f"{path}: unknown table or key {k!r} at the top level "
                              f"(expected [{section}])")
    options = config_options(command)
    result: dict[str, Any] = {}
    for key, value in doc[section].items():
        param = options.get(key) or options.get(key.replace("_", "-"))
        if param is None:
            near = difflib.get_close_matches(key, options, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else \
                f"; known keys: {', '.join(sorted(options))}"
            raise ConfigError(f"{path}: unknown key {key!r} in [{section}]{hint}")
        result[param.name] = _convert(path, section, key, param, value)
    return result


def config_option(section: str):
    """The `--config FILE` option of a daemon command (env GFS_CONFIG): loads the file's
    [section] table as the command's defaults before any other option is read."""
    def load(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
        if value:
            ctx.default_map = {**(ctx.default_map or {}), **load_config(value, section, ctx.command)}
        return value

    return click.option("--config", type=click.Path(dir_okay=False), envvar=CONFIG_ENV,
                        is_eager=True, expose_value=False, callback=load, metavar="FILE",
                        help=f"TOML file with a [{section}] table of these options "
                             f"(${CONFIG_ENV}); a flag or its environment variable overrides "
                             f"the file. `gfs admin init-node {section}` writes one.")
