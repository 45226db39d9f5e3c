"""`gfs gateway`: the HTTP gateway (docs/gateway.md)."""
from __future__ import annotations

import click

from cli.common import CONTEXT
from cli.identity_commands import parse_duration
from gfs.errors import InvalidArgument
from gfs.units import parse_size


def _address(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(f"{what} must be HOST:PORT, not {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def _cidrs(text: str) -> list[str]:
    from gateway.routing.cidr import parse_network
    out = [c.strip() for c in text.split(",") if c.strip()]
    for c in out:
        try:
            parse_network(c)
        except ValueError as err:
            raise click.BadParameter(str(err)) from None
    return out


@click.group("gateway", context_settings=CONTEXT, invoke_without_command=True)
@click.option("--listen", default="127.0.0.1:8080", show_default=True, envvar="GFS_GATEWAY_LISTEN",
              metavar="HOST:PORT", help="Where clients connect (HTTP/1.1 and HTTP/2).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="Serve TLS (ALPN h2 and http/1.1) with this certificate chain...")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="...and this private key.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 256),
              help="Processes sharing the port (SO_REUSEPORT).")
@click.option("--routes", "routes_file", type=click.Path(dir_okay=False), metavar="FILE",
              envvar="GFS_GATEWAY_ROUTES",
              help="Follow routes from this JSON file ({\"routes\": [...]}, reloaded on change) "
                   "instead of the masters'.")
@click.option("--state-dir", type=click.Path(file_okay=False), metavar="DIR",
              envvar="GFS_GATEWAY_STATE",
              help="Keep the last applied routes here; start from them when the source is down.")
@click.option("--metrics", "metrics_addr", metavar="HOST:PORT",
              help="/metrics and /status listener (worker i on PORT+i; PORT 0 picks one).")
@click.option("--access-log", metavar="FILE|-", help="JSON access log (- for stdout).")
@click.option("--allow", default="", metavar="CIDR,...", help="Only these clients (global).")
@click.option("--deny", default="", metavar="CIDR,...", help="Never these clients (global).")
@click.option("--trusted-proxies", default="", metavar="CIDR,...",
              help="Peers whose X-Forwarded-For is believed (default: nobody).")
@click.option("--proxy-protocol-from", default="", metavar="CIDR,...",
              help="Peers (L4 balancers) whose connections start with a PROXY v1/v2 header "
                   "naming the client (default: nobody; clear-text listeners only).")
@click.option("--max-body", default="1GiB", show_default=True, help="Largest request body.")
@click.option("--max-header", default="32KiB", show_default=True, help="Largest request head.")
@click.option("--header-timeout", default="10s", show_default=True,
              help="Time a client has to send a request's head.")
@click.option("--idle-timeout", default="60s", show_default=True,
              help="Close connections idle this long.")
@click.option("--max-connections", default=64, show_default=True, type=click.IntRange(1),
              help="HTTP/1.1 connections per upstream and worker.")
@click.option("--health-interval", default="2s", show_default=True,
              help="Time between active health checks (routes with a health path).")
@click.option("--max-pending", default=256, show_default=True, type=click.IntRange(0),
              help="Requests waiting for an upstream connection before 503.")
@click.option("--s3-secret-file", "s3_secret_file", type=click.Path(dir_okay=False),
              metavar="FILE", envvar="GFS_CLUSTER_SECRET_FILE",
              help="Serve the built-in `s3` target (docs/s3.md): the cluster secret, from which "
                   "only the S3 key is derived and kept (needs --masters).")
@click.option("--s3-region", default="us-east-1", show_default=True,
              help="The region the S3 API reports (clients may sign for any).")
@click.option("--s3-domain", default="", metavar="DOMAIN",
              help="Virtual-host style S3: BUCKET.DOMAIN names a bucket (path style always works).")
@click.pass_context
def gateway(ctx, listen, tls_cert, tls_key, workers, routes_file, state_dir, metrics_addr,
            access_log, allow, deny, trusted_proxies, proxy_protocol_from, max_body, max_header,
            header_timeout, idle_timeout, max_connections, health_interval,
            max_pending, s3_secret_file, s3_region, s3_domain) -> None:
    """Run the HTTP gateway (reverse proxy) in the foreground until SIGTERM.

    Routes come from the masters (`gfs route`; the global --masters and an administrator's or
    service account's --token) unless --routes names a file. `gfs gateway status` asks a
    running gateway how it is doing."""
    if ctx.invoked_subcommand is not None:
        return
    import logging
    import os

    from gateway.http.limits import Limits
    from gateway.main import GatewayOptions, serve
    from gateway.upstream.health import HealthSettings
    from gateway.upstream.pool import PoolSettings
    from gfs.config import resolve_tls_ca
    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if tls_cert and proxy_protocol_from:
        raise click.UsageError("--proxy-protocol-from works on clear-text listeners only")
    try:
        health = HealthSettings(interval_s=parse_duration(health_interval))
        if health.interval_s < 0.1:
            raise InvalidArgument("--health-interval must be at least 0.1s")
        limits = Limits(max_body_bytes=parse_size(max_body), max_header_bytes=parse_size(max_header),
                        header_timeout_s=parse_duration(header_timeout),
                        idle_timeout_s=parse_duration(idle_timeout))
    except (InvalidArgument, ValueError) as err:
        raise click.UsageError(str(err)) from None
    masters, token = [], ""
    if not routes_file:
        from gfs.config import resolve_masters, resolve_token
        masters = resolve_masters(ctx.obj.get("masters"))
        token = resolve_token(ctx.obj.get("token"))
        if not token:
            raise click.UsageError("following the masters' routes needs a token (--token or "
                                   "GFS_TOKEN): an administrator's or a service account's")
    if state_dir:
        os.makedirs(state_dir, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    opts = GatewayOptions(
        listen=_address(listen, "--listen"), workers=workers, tls_cert=tls_cert, tls_key=tls_key,
        routes_file=routes_file, state_dir=state_dir, masters=masters, token=token,
        tls_ca=resolve_tls_ca(ctx.obj.get("tls_ca")),
        metrics=_address(metrics_addr, "--metrics") if metrics_addr else None,
        access_log=access_log, allow=_cidrs(allow), deny=_cidrs(deny),
        trusted_proxies=_cidrs(trusted_proxies),
        proxy_protocol_from=_cidrs(proxy_protocol_from), limits=limits,
        pool=PoolSettings(max_connections=max_connections, max_pending=max_pending),
        health=health, s3_key=_s3_key(s3_secret_file, masters), s3_region=s3_region,
        s3_domains=[s3_domain] if s3_domain else [])
    from gateway.memory import exec_with_c_allocator
    exec_with_c_allocator(os.path.join(os.path.dirname(os.path.abspath(__file__)), "main.py"))
    raise SystemExit(serve(opts))


def _s3_key(secret_file: str | None, masters: list[str]) -> bytes | None:
    if not secret_file:
        return None
    if not masters:
        raise click.UsageError("the S3 API (--s3-secret-file) needs the masters, not --routes")
    from gfs.auth.s3keys import s3_key
    from gfs.auth.secret import load_secret_file
    from gfs.errors import GfsError
    try:
        return s3_key(load_secret_file(secret_file))
    except GfsError as err:
        raise click.UsageError(err.message) from None


@gateway.command("status", context_settings=CONTEXT)
@click.option("--metrics", "metrics_addr", required=True, metavar="HOST:PORT",
              help="The gateway's --metrics address (worker 0).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 256),
              help="Ask this many workers (PORT, PORT+1, ...).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def gateway_status(metrics_addr, workers, as_json) -> None:
    """Each worker's routes revision, how stale they are, and its open connections."""
    import json
    import urllib.request

    from cli.common import emit_json
    from gfs.errors import Unavailable
    host, port = _address(metrics_addr, "--metrics")
    out = []
    for i in range(workers):
        url = f"http://{host}:{port + i}/status"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                out.append(json.loads(resp.read()))
        except (OSError, ValueError) as err:
            raise Unavailable(f"no gateway status at {url}: {err}") from None
    if as_json:
        emit_json(out)
        return
    for w in out:
        stale = ("never confirmed by its source" if w["staleness_s"] is None
                 else f"confirmed {w['staleness_s']:.1f} s ago")
        click.echo(f"worker {w['worker']} (pid {w['pid']}): {w['routes']} routes, revision "
                   f"{w['revision']}, {stale}, {w['connections']} connections")
