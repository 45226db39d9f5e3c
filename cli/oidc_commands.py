"""`gfs oidc add/ls/rm/link/unlink` (the issuers a cluster trusts) and `gfs login --oidc`
(signing in at one of them): see docs/identity.md, "Signing in with OIDC"."""
from __future__ import annotations

import socket

import click

from cli.common import CONTEXT, emit_json, format_time, make_client
from cli.identity_commands import parse_duration
from gfs.config import save_token, token_file

USER_CLAIMS = ("email", "sub", "preferred_username")


def sign_in(ctx: click.Context, issuer: str, *, client_id: str | None, client_secret: str,
            device: bool,
            open_browser: bool, ttl_s: float, wait_s: float, as_json: bool) -> None:
    """`gfs login --oidc ISSUER`: get an ID token from the issuer, trade it with the masters for
    a gfs token, and remember that token like `gfs login` does."""
    from gfs import oidc_flow               # Authlib and requests: only when signing in
    ctx.obj["token"] = ""                   # the sign-in itself runs anonymously
    with make_client(ctx) as c:
        config = c.oidc_client_config(issuer)
        say = (lambda text: click.echo(text, err=True))
        flow = dict(say=say, timeout_s=wait_s, client_secret=client_secret)
        scopes, client = config["scopes"], client_id or config["client_id"]
        got = (oidc_flow.device(issuer, client, scopes, **flow) if device else
               oidc_flow.authorization_code(issuer, client, scopes, open_browser=open_browser,
                                            **flow))
        token, who = c.oidc_login(issuer, got.id_token, nonce=got.nonce,
                                  host=socket.gethostname(), ttl_s=ttl_s)
    save_token(token)
    if as_json:
        emit_json({**who, "saved_in": str(token_file())})
        return
    expires = who["token"]["expires_ms"]
    click.echo(f"signed in as {who['identity']} at {issuer}: gfs user {who['user']}"
               f"{' (created now)' if who['created'] else ''}, token {who['token']['name']!r} "
               f"until {format_time(expires) if expires else 'revoked'}; saved in {token_file()}")


@click.group(context_settings=CONTEXT)
def oidc() -> None:
    """OpenID Connect issuers people sign in at (`gfs login --oidc`); administrators."""


@oidc.command("add")
@click.argument("issuer")
@click.option("--client-id", required=True,
              help="This cluster's client id at the issuer (the ID tokens' audience).")
@click.option("--audience", "audiences", multiple=True, metavar="AUD",
              help="Another audience to accept besides the client id (repeatable).")
@click.option("--user-claim", type=click.Choice(USER_CLAIMS), default="email",
              show_default=True,
              help="The ID token claim that identifies a person (email: only when verified).")
@click.option("--auto-create", is_flag=True,
              help="Create a gfs user at the first sign-in of an unknown identity.")
@click.option("--allowed-domain", "domains", multiple=True, metavar="DOMAIN",
              help="Admit only verified emails of this domain (repeatable).")
@click.option("--token-ttl", default="12h", show_default=True,
              help="Longest life of the gfs token a sign-in gets, e.g. 8h, 7d.")
@click.option("--replace", is_flag=True, help="Change an issuer already configured.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def oidc_add(ctx, issuer: str, client_id: str, audiences: tuple[str, ...], user_claim: str,
             auto_create: bool, domains: tuple[str, ...], token_ttl: str, replace: bool,
             as_json: bool) -> None:
    """Trust an issuer: `gfs oidc add https://accounts.example.com --client-id gfs`."""
    with make_client(ctx) as c:
        added = c.oidc_add(issuer, client_id, audiences=list(audiences), user_claim=user_claim,
                           auto_create=auto_create, allowed_domains=list(domains),
                           token_ttl_s=parse_duration(token_ttl), replace=replace)
    if as_json:
        emit_json(added)
        return
    click.echo(f"issuer {added['issuer']} {'changed' if replace else 'added'}: client id "
               f"{added['client_id']}, users by {added['user_claim']}"
               f"{', created at first sign-in' if added['auto_create'] else ''}")


@oidc.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def oidc_ls(ctx, as_json: bool) -> None:
    """Trusted issuers and the identities linked to users."""
    with make_client(ctx) as c:
        config = c.oidc_config()
    if as_json:
        emit_json(config)
        return
    if not config["issuers"]:
        click.echo("no OIDC issuers (add one: gfs oidc add ISSUER_URL --client-id ID)")
    for i in config["issuers"]:
        flags = [f"client id {i['client_id']}", f"users by {i['user_claim']}",
                 "auto-create" if i["auto_create"] else "links only",
                 f"tokens up to {i['token_ttl_s'] / 3600:g}h"]
        if len(i["audiences"]) > 1:
            flags.append("also audiences " + ", ".join(i["audiences"][1:]))
        if i["allowed_domains"]:
            flags.append("domains " + ", ".join(i["allowed_domains"]))
        click.echo(f"{i['issuer']}  ({'; '.join(flags)})")
        for link in config["links"]:
            if link["issuer"] == i["issuer"]:
                click.echo(f"    {link['identity']:<40} -> {link['user']:<20} "
                           f"{link['how']} {format_time(link['created_ms'])}")


@oidc.command("rm")
@click.argument("issuer")
@click.pass_context
def oidc_rm(ctx, issuer: str) -> None:
    """Stop trusting an issuer (its links go; tokens it gave stay until revoked)."""
    with make_client(ctx) as c:
        links = c.oidc_remove(issuer)
    click.echo(f"issuer {issuer} removed ({links} links)")


@oidc.command("link")
@click.argument("issuer")
@click.argument("identity")
@click.argument("user")
@click.pass_context
def oidc_link(ctx, issuer: str, identity: str, user: str) -> None:
    """Link an identity at an issuer (the value of its user claim) to an existing user."""
    with make_client(ctx) as c:
        c.oidc_link(issuer, identity, user)
    click.echo(f"{identity} at {issuer} signs in as {user}")


@oidc.command("unlink")
@click.argument("issuer")
@click.argument("identity")
@click.pass_context
def oidc_unlink(ctx, issuer: str, identity: str) -> None:
    """Remove a link (tokens already given stay until revoked)."""
    with make_client(ctx) as c:
        c.oidc_unlink(issuer, identity)
    click.echo(f"{identity} at {issuer} unlinked")
