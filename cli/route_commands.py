"""`gfs route add/ls/show/rm`: the gateway routes kept by the masters (docs/gateway.md)."""
from __future__ import annotations

import click

from cli.common import CONTEXT, GfsGroup, emit_json, format_time, make_client
from cli.identity_commands import parse_duration
from gfs.errors import InvalidArgument


def _list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


@click.group("route", cls=GfsGroup, context_settings=CONTEXT)
def route() -> None:
    """Gateway routes: which requests go where (administrators)."""


@route.command("add", context_settings=CONTEXT)
@click.argument("name")
@click.option("--host", default="", metavar="HOST",
              help="api.example.com, *.example.com, or any host (default).")
@click.option("--path", default="/*", show_default=True, metavar="PATTERN",
              help="Segments: static, {param}, and a final * for the rest.")
@click.option("--to", "to", required=True, metavar="URL,...",
              help="Upstreams: http://HOST:PORT (HTTP/1.1), h2c://HOST:PORT (HTTP/2, gRPC).")
@click.option("--lb", default="round-robin", show_default=True,
              help="round-robin, least-conn, hash:ip or hash:header:NAME.")
@click.option("--strip-prefix", is_flag=True, help="Drop the path before the final * upstream.")
@click.option("--timeout", default="30s", show_default=True,
              help="How long to wait for an upstream's response head.")
@click.option("--retries", default=1, show_default=True, type=click.IntRange(0, 10),
              help="Tries on another upstream (idempotent requests, before any response).")
@click.option("--require-token", default="", metavar="SCOPE",
              help="Callers need a gfs token granting SCOPE ('*': any valid token).")
@click.option("--allow", default="", metavar="CIDR,...", help="Only these clients.")
@click.option("--deny", default="", metavar="CIDR,...", help="Never these clients.")
@click.option("--health-path", default="", metavar="PATH",
              help="Check each upstream with GET PATH; failing ones are taken out.")
@click.option("--health-interval", default="", metavar="DURATION",
              help="Time between checks of this route's upstreams (default: the gateway's).")
@click.option("--health-fall", default=0, type=click.IntRange(0, 100), metavar="N",
              help="Failed checks in a row that take an upstream out (default 3).")
@click.option("--health-rise", default=0, type=click.IntRange(0, 100), metavar="N",
              help="Good checks in a row that bring it back (default 2).")
@click.option("--replace", is_flag=True, help="Change the route of that name if there is one.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def route_add(ctx, name, host, path, to, lb, strip_prefix, timeout, retries, require_token,
              allow, deny, health_path, health_interval, health_fall, health_rise, replace,
              as_json) -> None:
    """Add a route NAME (or change it with --replace); gateways apply it within a second."""
    from gateway.routing.route import Route
    fields = {"name": name, "host": host, "path": path, "to": _list(to), "lb": lb,
              "strip_prefix": strip_prefix, "timeout_s": parse_duration(timeout),
              "retries": retries, "require_token": require_token, "allow": _list(allow),
              "deny": _list(deny), "health_path": health_path,
              "health_interval_s": parse_duration(health_interval) if health_interval else 0.0,
              "health_fall": health_fall, "health_rise": health_rise}
    try:
        Route.from_dict(dict(fields)).validate()
    except ValueError as err:
        raise InvalidArgument(str(err)) from None
    got = make_client(ctx).route_put(fields, replace=replace)
    if as_json:
        emit_json(got)
    else:
        click.echo(f"route {got['name']}: {_describe(got)} (revision {got['revision']})")


def _describe(r: dict) -> str:
    return f"{r['host'] or '*'}{r['path']} -> {','.join(r['to'])}"


@route.command("ls", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def route_ls(ctx, as_json) -> None:
    """Every route, by name."""
    got = make_client(ctx).routes()
    if as_json:
        emit_json(got)
        return
    for r in got["routes"]:
        extras = [f"lb={r['lb']}"] + (["strip-prefix"] if r["strip_prefix"] else []) + \
                 ([f"token={r['require_token']}"] if r["require_token"] else [])
        click.echo(f"{r['name']:<20} {_describe(r)}  {' '.join(extras)}")
    click.echo(f"({len(got['routes'])} routes, revision {got['revision']})")


@route.command("show", context_settings=CONTEXT)
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def route_show(ctx, name, as_json) -> None:
    """One route in full."""
    from gfs.errors import NotFound
    found = [r for r in make_client(ctx).routes()["routes"] if r["name"] == name]
    if not found:
        raise NotFound(f"no route {name}")
    r = found[0]
    if as_json:
        emit_json(r)
        return
    for key, value in r.items():
        if key == "updated_ms":
            value = format_time(value)
        elif isinstance(value, list):
            value = ",".join(value) or "-"
        click.echo(f"{key.replace('_', '-'):<14} {value if value != '' else '-'}")


@route.command("rm", context_settings=CONTEXT)
@click.argument("name")
@click.pass_context
def route_rm(ctx, name) -> None:
    """Remove a route; gateways stop serving it within a second."""
    make_client(ctx).route_remove(name)
    click.echo(f"route {name} removed")
