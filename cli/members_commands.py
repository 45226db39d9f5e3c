"""`gfs master list/add/remove/step-down`: the masters' Raft group, changed while it serves
(master/members.py). Administrators only."""
from __future__ import annotations

import click

from cli.common import CONTEXT, emit_json, make_client
from gfs.errors import InvalidArgument


def split_member(spec: str) -> tuple[str, str]:
    """`HOST:RAFT@HOST:GRPC` -> (raft address, gRPC address)."""
    raft, sep, grpc_address = spec.partition("@")
    if not sep or not raft or not grpc_address:
        raise InvalidArgument(f"a master is given as HOST:RAFT_PORT@HOST:GRPC_PORT, not {spec!r}")
    return raft, grpc_address


def print_members(d: dict) -> None:
    click.echo(f"{'RAFT':<22}{'GRPC':<22}{'ROLE':<10}{'MATCH':>9}  CONNECTED")
    for m in d["members"]:
        click.echo(f"{m['raft_address']:<22}{m['grpc_address'] or '-':<22}{m['role'] or '-':<10}"
                   f"{m['match_index']:>9}  {'yes' if m['connected'] else 'no'}")
    click.echo(f"term {d['term']}, commit index {d['commit_index']}, "
               f"{len(d['members'])} member{'s' if len(d['members']) != 1 else ''}")


def register(master: click.Group) -> None:
    """Add the group commands to `gfs master`."""

    @master.command("list", context_settings=CONTEXT)
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @click.pass_context
    def master_list(ctx, as_json: bool) -> None:
        """The group's members as the leader sees them: addresses, role, match index (how
        much of the log each has), whether the leader reaches it; term and commit index."""
        with make_client(ctx) as c:
            d = c.members()
        emit_json(d) if as_json else print_members(d)

    @master.command("add", context_settings=CONTEXT)
    @click.argument("member", metavar="HOST:RAFT@HOST:GRPC")
    @click.option("--timeout", default=120.0, show_default=True, type=click.FloatRange(1.0),
                  help="Seconds to wait for the change to commit and the new master to catch up.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @click.pass_context
    def master_add(ctx, member: str, timeout: float, as_json: bool) -> None:
        """Add a master to the running group. Start it first with `gfs master --join` and
        --peers listing the current members and itself (an empty --data). Returns when it has
        caught up with the log. One change at a time; to replace a dead master, remove it
        first."""
        raft, grpc_address = split_member(member)
        with make_client(ctx) as c:
            d = c.member_add(raft, grpc_address, timeout)
        if as_json:
            emit_json(d)
            return
        click.echo(f"added {raft} (committed in {d['commit_s']:.2f} s, caught up in "
                   f"{d['catch_up_s']:.2f} s)")
        print_members(d)

    @master.command("remove", context_settings=CONTEXT)
    @click.argument("member", metavar="ID")
    @click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(1.0),
                  help="Seconds to wait for the change to commit.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @click.pass_context
    def master_remove(ctx, member: str, timeout: float, as_json: bool) -> None:
        """Remove a master (ID: its Raft or gRPC address, as `gfs master list` shows) from the
        group, dead or alive. If it is the leader, leadership is handed over first. Stop the
        removed master afterwards; its data directory is not reused."""
        with make_client(ctx) as c:
            d = c.members()
            raft = _raft_of(member, d)
            moved = None
            if raft and raft == d["leader_raft"] and len(d["members"]) > 1:
                moved = c.step_down("", min(timeout, 15.0))
            d = c.member_remove(member, timeout)
        if as_json:
            emit_json({**d, "stepped_down_to": moved["leader_raft"] if moved else ""})
            return
        if moved:
            click.echo(f"leadership moved to {moved['leader_raft']}")
        click.echo(f"removed {member} (committed in {d['commit_s']:.2f} s)")
        print_members(d)

    @master.command("step-down", context_settings=CONTEXT)
    @click.option("--to", "to", default="", metavar="ID",
                  help="The member to hand leadership to (default: the most up-to-date one).")
    @click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(1.0),
                  help="Seconds to wait for a follower to catch up and take over.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @click.pass_context
    def master_step_down(ctx, to: str, timeout: float, as_json: bool) -> None:
        """Hand the leadership to another member (Raft's TimeoutNow): new commands wait while
        the chosen follower catches up, then it is elected at once."""
        with make_client(ctx) as c:
            moved = c.step_down(to, timeout)
        if as_json:
            emit_json(moved)
        else:
            click.echo(f"leadership moved to {moved['leader_raft']} ({moved['leader_grpc']}) "
                       f"in {moved['seconds']:.2f} s")


def _raft_of(member: str, d: dict) -> str:
    for m in d["members"]:
        if member in (m["raft_address"], m["grpc_address"]):
            return m["raft_address"]
    return ""
