"""`gfs lb`: the L4 (TCP/UDP) balancer in front of gateway replicas (docs/gateway.md)."""
from __future__ import annotations

import click

from cli.common import CONTEXT
from cli.gateway_commands import _address
from cli.identity_commands import parse_duration
from gfs.errors import GfsError, InvalidArgument


@click.command("lb", context_settings=CONTEXT)
@click.option("--listen", required=True, envvar="GFS_LB_LISTEN", metavar="HOST:PORT",
              help="Where clients connect.")
@click.option("--to", "to", required=True, envvar="GFS_LB_TO", metavar="HOST:PORT,...",
              help="The backends (e.g. gateway replicas).")
@click.option("--udp", is_flag=True,
              help="Balance UDP datagrams (sessions per client address) instead of TCP.")
@click.option("--policy", type=click.Choice(["least-conn", "round-robin", "hash:ip"]),
              default="least-conn", show_default=True,
              help="How a backend is chosen; hash:ip keeps a client on one backend "
                   "(rendezvous hashing: only a leaving backend's clients move).")
@click.option("--proxy-protocol", is_flag=True,
              help="Start each backend connection with a PROXY v2 header naming the client "
                   "(gateways: --proxy-protocol-from THIS_HOST). TCP only.")
@click.option("--connect-timeout", default="1s", show_default=True,
              help="Time a backend has to accept before the next one is tried.")
@click.option("--check-interval", default="0.5s", show_default=True,
              help="Time between active checks (TCP connects) of each backend.")
@click.option("--fall", default=2, show_default=True, type=click.IntRange(1),
              help="Failed checks in a row that take a backend out.")
@click.option("--rise", default=2, show_default=True, type=click.IntRange(1),
              help="Good checks in a row that bring it back.")
@click.option("--udp-idle", default="30s", show_default=True,
              help="A UDP session ends after this long without datagrams.")
@click.option("--metrics", "metrics_addr", metavar="HOST:PORT",
              help="Serve Prometheus /metrics here.")
def lb(listen, to, udp, policy, proxy_protocol, connect_timeout, check_interval, fall, rise,
       udp_idle, metrics_addr) -> None:
    """Balance TCP connections (or UDP datagrams) over backends, in the foreground until
    SIGTERM: health-checked, least-connections or consistent hashing, PROXY protocol v2."""
    from gateway.l4.backends import parse_backends
    from gateway.l4.main import LbOptions, serve
    from gateway.upstream.health import HealthSettings
    from gfs import logs
    if udp and proxy_protocol:
        raise click.UsageError("--proxy-protocol works with TCP only")
    try:
        backends = parse_backends(to)
        interval = parse_duration(check_interval)
        if interval < 0.05:
            raise InvalidArgument("--check-interval must be at least 0.05s")
        opts = LbOptions(listen=_address(listen, "--listen"), backends=backends, udp=udp,
                         policy=policy, proxy_protocol=proxy_protocol,
                         connect_timeout_s=parse_duration(connect_timeout),
                         checks=HealthSettings(interval_s=interval, timeout_s=min(interval, 1.0),
                                              fall=fall, rise=rise),
                         udp_idle_s=parse_duration(udp_idle), metrics=metrics_addr)
    except (InvalidArgument, ValueError) as err:
        raise click.UsageError(str(err)) from None
    logs.setup("lb")
    try:
        serve(opts)
    except OSError as err:
        raise click.ClickException(f"cannot listen on {listen}: {err.strerror or err}") from None
    except GfsError as err:
        raise click.ClickException(err.message) from None
