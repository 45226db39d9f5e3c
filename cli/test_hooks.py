"""Daemon options that exist only for the test harness (the chaos suite). Their names say so,
they are off unless given, and `gfs cluster up` never gives them."""
from __future__ import annotations

import click

from gfs.clock import ENV_TEST_CLOCK_FILE, use_test_clock_file


def _use_test_clock(ctx, param, value):
    if value:
        use_test_clock_file(value)
    return value


test_clock_option = click.option(
    "--test-clock-file", envvar=ENV_TEST_CLOCK_FILE, type=click.Path(dir_okay=False),
    metavar="FILE", expose_value=False, callback=_use_test_clock, is_eager=True,
    help="TEST ONLY: read the wall clock as the system's plus the offset (seconds) written in "
         "FILE, re-read when it changes (the chaos suite's clock jumps).")


def refuse_wrong_planted_bug() -> None:
    """A daemon does not start with the planted-bug variables set wrongly (gfs/planted.py)."""
    from gfs.planted import PlantedBugRefused, check_at_start
    try:
        check_at_start()
    except PlantedBugRefused as err:
        raise click.ClickException(str(err)) from None
