"""What every `gfs` command module shares: click settings, the error-to-one-line group,
JSON output, the client built from the global options, progress bars."""
from __future__ import annotations

import json
import sys
import time

import click

from gfs.errors import GfsError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class GfsGroup(click.Group):
    """Turns every GfsError (and Ctrl-C) into one line on stderr and a non-zero exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GfsError as err:
            click.echo(f"gfs: {err.code.lower().replace('_', ' ')}: {err.message}", err=True)
            ctx.exit(1)
        except UnicodeError as err:    # a last line of defence: names are checked before
            click.echo(f"gfs: invalid argument: not valid UTF-8: {err}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("gfs: interrupted", err=True)
            ctx.exit(130)
        except BrokenPipeError:
            ctx.exit(1)


def emit_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def make_client(ctx: click.Context):
    from gfs.client import Client
    return Client(ctx.obj.get("masters"), deadline=ctx.obj.get("timeout", 30.0),
                  token=ctx.obj.get("token"), tls_ca=ctx.obj.get("tls_ca"))


def format_time(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ms / 1000))


class Progress:
    """A tqdm bar on stderr (speed, ETA) when stderr is a terminal or --progress is given."""

    def __init__(self, enabled: bool | None, total: int | None, label: str):
        if enabled is None:
            enabled = sys.stderr.isatty()
        self.bar = None
        if enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                            desc=label, file=sys.stderr, leave=False, dynamic_ncols=True)

    def __call__(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
