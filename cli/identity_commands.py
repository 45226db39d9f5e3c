"""`gfs login/logout/whoami`, `gfs user`, `gfs sa`, `gfs token`, `gfs visibility`, `gfs chown`,
`gfs quota`, `gfs du` and `gfs admin audit`: identity and access from the command line."""
from __future__ import annotations

import sys

import click

from cli.common import CONTEXT, emit_json, format_time, make_client
from cli.remote import stat_if_dir_meant
from gfs.auth.tokens import new_token, parse_token
from gfs.config import forget_token, save_token, token_file
from gfs.errors import InvalidArgument
from gfs.units import human_size, parse_count, parse_size

DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def parse_duration(text: str) -> float:
    """'30d', '12h', '90m', '3600' (seconds), '0' (never) -> seconds."""
    text = text.strip().lower()
    unit = DURATION_UNITS.get(text[-1:]) if text else None
    number = text[:-1] if unit else text
    try:
        value = float(number)
    except ValueError:
        raise InvalidArgument(f"not a duration: {text!r} (examples: 3600, 90m, 12h, 30d, 1y; "
                              "0 = never expires)") from None
    if value < 0:
        raise InvalidArgument(f"a duration cannot be negative: {text!r}")
    return value * (unit or 1)


def _quota_text(limit: int, used: int, size: bool) -> str:
    shown = human_size(used) if size else str(used)
    if not limit:
        return f"{shown} (no limit)"
    return f"{shown} of {human_size(limit) if size else limit}"


# --- signing in --------------------------------------------------------------------------------

@click.command(context_settings=CONTEXT)
@click.option("--token", "token_text", metavar="gfs_...",
              help="The token (default: read from standard input, or asked for on a terminal).")
@click.option("--oidc", "issuer", metavar="ISSUER_URL",
              help="Sign in at this OpenID Connect issuer instead (one the cluster trusts: "
                   "gfs oidc ls); a gfs token is made for you.")
@click.option("--client-id", help="With --oidc: the client id to sign in with (default: the "
                                  "cluster's at that issuer).")
@click.option("--client-secret", default="", envvar="GFS_OIDC_CLIENT_SECRET",
              help="With --oidc: the client secret, for an issuer that gives one to command-line "
                   "clients (default: $GFS_OIDC_CLIENT_SECRET; none: a public client).")
@click.option("--device", is_flag=True,
              help="With --oidc: the device flow, for a machine without a browser (open a URL "
                   "elsewhere, type a code).")
@click.option("--no-browser", is_flag=True, help="With --oidc: only print the URL to open.")
@click.option("--ttl", default="0", help="With --oidc: the gfs token's lifetime, e.g. 8h "
                                         "(default and longest: the issuer's setting).")
@click.option("--wait", "wait_s", default=300.0, show_default=True, type=click.FloatRange(1),
              help="With --oidc: seconds to wait for the sign-in to complete.")
@click.option("--json", "as_json", is_flag=True, help="With --oidc: print JSON.")
@click.pass_context
def login(ctx, token_text: str | None, issuer: str | None, client_id: str | None,
          client_secret: str, device: bool,
          no_browser: bool, ttl: str, wait_s: float, as_json: bool) -> None:
    """Remember a token for later commands (in your config directory, 0600), or sign in at an
    OpenID Connect issuer with --oidc."""
    if issuer is not None:
        if token_text is not None:
            raise click.UsageError("give either --token or --oidc, not both")
        from cli.oidc_commands import sign_in          # it imports this module
        sign_in(ctx, issuer, client_id=client_id, client_secret=client_secret, device=device,
                open_browser=not no_browser, ttl_s=parse_duration(ttl), wait_s=wait_s,
                as_json=as_json)
        return
    if device or no_browser or client_id or as_json or ttl != "0":
        raise click.UsageError("--client-id, --device, --no-browser, --ttl and --json go with "
                               "--oidc ISSUER_URL")
    if token_text is None:
        token_text = (click.prompt("token", hide_input=True) if sys.stdin.isatty()
                      else sys.stdin.readline())
    token_text = token_text.strip()
    parse_token(token_text)
    ctx.obj["token"] = token_text
    with make_client(ctx) as c:
        me = c.whoami()
    save_token(token_text)
    click.echo(f"signed in as {me['user']}" + (f" ({me['account']})" if me["account"] else "")
               + f" with token {me['token']!r}; saved in {token_file()}")


@click.command(context_settings=CONTEXT)
def logout() -> None:
    """Forget the remembered token."""
    click.echo("signed out" if forget_token() else "no token was remembered")


@click.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def whoami(ctx, as_json: bool) -> None:
    """Who you are to the cluster: user, token, scopes, usage and quota."""
    with make_client(ctx) as c:
        me = c.whoami()
    if as_json:
        emit_json(me)
        return
    if not me["user"]:
        click.echo("anonymous (no token): you see public files only")
        return
    who = f"{me['account']} (service account of {me['user']})" if me["account"] else me["user"]
    click.echo(f"user:       {who}{' [admin]' if me['admin'] else ''}")
    click.echo(f"token:      {me['token']}")
    click.echo(f"scopes:     {', '.join(me['scopes'])}")
    click.echo(f"bytes:      {_quota_text(me['quota_bytes'], me['used_bytes'], True)}")
    click.echo(f"files:      {_quota_text(me['quota_files'], me['used_files'], False)}")


# --- users and service accounts ----------------------------------------------------------------

@click.group(context_settings=CONTEXT)
def user() -> None:
    """Users (adding, disabling and enabling them: administrators)."""


@user.command("add")
@click.option("--admin", is_flag=True, help="Make the user an administrator.")
@click.argument("name")
@click.pass_context
def user_add(ctx, admin: bool, name: str) -> None:
    """Add a user; their namespace /NAME is created, private."""
    with make_client(ctx) as c:
        added = c.user_add(name, admin=admin)
    click.echo(f"user {added['name']} added; home {added['home']} (give them a token: "
               f"gfs token create --for {added['name']} --name NAME)")


def _set_user(ctx, name: str, **change) -> dict:
    with make_client(ctx) as c:
        return c.user_set(name, **change)


def _disabling_command(verb: str, disabled: bool, summary: str) -> click.Command:
    """`gfs user disable NAME` / `gfs user enable NAME`."""
    @user.command(verb, help=summary)
    @click.argument("name")
    @click.pass_context
    def command(ctx, name: str) -> None:
        _set_user(ctx, name, disabled=disabled)
        click.echo(f"user {name} {verb}d")
    return command


user_disable = _disabling_command("disable", True, "Disable a user: every token of theirs (and "
                                  "of their service accounts) stops working.")
user_enable = _disabling_command("enable", False, "Enable a disabled user again.")


@user.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def user_ls(ctx, as_json: bool) -> None:
    """Users and service accounts with their usage (others than administrators: themselves
    and their service accounts)."""
    with make_client(ctx) as c:
        users = c.users()
    if as_json:
        emit_json(users)
        return
    click.echo(f"{'NAME':<20}{'KIND':<9}{'OWNER':<14}{'FLAGS':<16}{'USED':>11}{'FILES':>9}")
    for u in users:
        flags = ",".join(f for f, on in (("admin", u["admin"]), ("disabled", u["disabled"])) if on)
        click.echo(f"{u['name']:<20}{u['kind']:<9}{u['owner'] or '-':<14}{flags or '-':<16}"
                   f"{human_size(u['used_bytes']):>11}{u['used_files']:>9}")


@click.group("sa", context_settings=CONTEXT)
def service_account() -> None:
    """Service accounts: identities for programs, owned by a user."""


@service_account.command("create")
@click.option("--owner", default="", help="The user it belongs to (default: you).")
@click.argument("name")
@click.pass_context
def sa_create(ctx, owner: str, name: str) -> None:
    """Create a service account (give it tokens with `gfs token create --for NAME`)."""
    with make_client(ctx) as c:
        made = c.account_create(name, owner=owner)
    click.echo(f"service account {made['name']} created for {made['owner']}")


@service_account.command("rm")
@click.argument("name")
@click.pass_context
def sa_rm(ctx, name: str) -> None:
    """Delete a service account; its tokens are revoked."""
    with make_client(ctx) as c:
        gone = c.account_delete(name)
    click.echo(f"service account {name} deleted ({gone['revoked']} tokens revoked)")


@service_account.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def sa_ls(ctx, as_json: bool) -> None:
    """Service accounts (yours; an administrator sees all)."""
    with make_client(ctx) as c:
        accounts = [u for u in c.users() if u["kind"] == "account"]
    if as_json:
        emit_json(accounts)
        return
    for a in accounts:
        click.echo(f"{a['name']:<20}{a['owner']}")


# --- tokens ------------------------------------------------------------------------------------

@click.group(context_settings=CONTEXT)
def token() -> None:
    """Tokens: create (shown once), list, revoke."""


@token.command("create")
@click.option("--name", required=True, help="A name to recognise (and revoke) it by.")
@click.option("--scope", "scopes", multiple=True, metavar="SCOPE",
              help="What it may do, e.g. storage.alice.files:read,list or "
                   "storage.alice.files@/alice/backups/**:read,write (repeatable; default: "
                   "everything its owner may do).")
@click.option("--ttl", default="0", show_default=True,
              help="Lifetime, e.g. 3600, 12h, 30d, 1y (0: never expires).")
@click.option("--for", "principal", default="", metavar="USER|SERVICE_ACCOUNT",
              help="Whose token (default: yours; a service account of yours; administrators: "
                   "anyone).")
@click.option("--s3", "s3", is_flag=True,
              help="Also print the token's S3 access key id and secret (docs/s3.md).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with the token).")
@click.pass_context
def token_create(ctx, name: str, scopes: tuple[str, ...], ttl: str, principal: str, s3: bool,
                 as_json: bool) -> None:
    """Create a token and print it once: it is not stored anywhere in clear."""
    with make_client(ctx) as c:
        secret, info = c.token_create(name, scopes=list(scopes), ttl_s=parse_duration(ttl),
                                      principal=principal)
    keys = {}
    if s3:
        from gfs.client import Client
        with Client(ctx.obj.get("masters"), token=secret, tls_ca=ctx.obj.get("tls_ca")) as c:
            keys = c.s3_credentials()
    if as_json:
        emit_json({**info, "token": secret, **keys})
        return
    expires = format_time(info["expires_ms"]) if info["expires_ms"] else "never"
    click.echo(secret)
    if keys:
        click.echo(f"AWS_ACCESS_KEY_ID={keys['access_key_id']}")
        click.echo(f"AWS_SECRET_ACCESS_KEY={keys['secret_access_key']}")
    click.echo(f"(token {info['name']!r}, id {info['id']}, for {info['principal']}, scopes "
               f"{', '.join(info['scopes'])}, expires {expires}; shown once: store it now)",
               err=True)


@token.command("new")
def token_new() -> None:
    """Print a fresh random token without asking any cluster: for a new cluster's first
    administrator (`gfs token new > admin.token`, then `gfs master --admin-token-file`)."""
    click.echo(new_token())


@token.command("ls")
@click.option("--all", "all_users", is_flag=True, help="Every user's (administrators).")
@click.option("--revoked", is_flag=True, help="Include revoked tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def token_ls(ctx, all_users: bool, revoked: bool, as_json: bool) -> None:
    """Your tokens and your service accounts' (never the tokens themselves)."""
    with make_client(ctx) as c:
        tokens = [t for t in c.tokens(all_users) if revoked or not t["revoked_ms"]]
    if as_json:
        emit_json(tokens)
        return
    click.echo(f"{'ID':<14}{'NAME':<16}{'FOR':<16}{'CREATED':<18}{'LAST USED':<18}"
               f"{'EXPIRES':<18}SCOPES")
    for t in tokens:
        expires = format_time(t["expires_ms"]) if t["expires_ms"] else "never"
        if t["revoked_ms"]:
            expires = "revoked " + format_time(t["revoked_ms"])
        used = format_time(t["last_used_ms"]) if t["last_used_ms"] else "-"
        click.echo(f"{t['id']:<14}{t['name']:<16}{t['principal']:<16}"
                   f"{format_time(t['created_ms']):<18}{used:<18}{expires:<18}"
                   f"{', '.join(t['scopes'])}")


@token.command("revoke")
@click.argument("token_ref", metavar="ID|NAME")
@click.pass_context
def token_revoke(ctx, token_ref: str) -> None:
    """Revoke a token now (by id, an id prefix of 6+ digits, or name)."""
    with make_client(ctx) as c:
        ids = c.token_revoke(token_ref)
    click.echo(f"revoked {', '.join(ids)}")


# --- access to files ---------------------------------------------------------------------------

@click.group(context_settings=CONTEXT)
def visibility() -> None:
    """Who may see and read a directory or file (inherited by what is below it)."""


@visibility.command("set")
@click.argument("path")
@click.argument("level", type=click.Choice(["private", "visible", "public", "inherit"]))
@click.pass_context
def visibility_set(ctx, path: str, level: str) -> None:
    """private: only you; visible: signed-in users may list and stat, not read;
    public: anyone, anonymous included, may read; inherit: as the directory above."""
    with make_client(ctx) as c:
        path = stat_if_dir_meant(c, path)
        c.set_visibility(path, "" if level == "inherit" else level)
        shown = c.stat(path).visibility
    click.echo(f"{path}: {shown}" + (" (inherited)" if level == "inherit" else ""))


@click.command(context_settings=CONTEXT)
@click.option("-R", "--recursive", is_flag=True, help="Everything below it too.")
@click.argument("owner")
@click.argument("path")
@click.pass_context
def chown(ctx, recursive: bool, owner: str, path: str) -> None:
    """Give a file or directory another owner (administrators)."""
    with make_client(ctx) as c:
        changed = c.chown(stat_if_dir_meant(c, path), owner, recursive=recursive)
    click.echo(f"{changed} changed")


@click.group(context_settings=CONTEXT)
def quota() -> None:
    """Per-user limits on logical bytes and file count."""


@quota.command("set")
@click.option("--files", default="0", show_default=True, help="Most files (0: no limit), e.g. 1M.")
@click.argument("name")
@click.argument("size")
@click.pass_context
def quota_set(ctx, files: str, name: str, size: str) -> None:
    """Set a user's quota, e.g. `gfs quota set alice 500GiB --files 1M` (0: no limit)."""
    limits = (parse_size(size), parse_count(files))
    with make_client(ctx) as c:
        c.user_set(name, quota=limits)
    click.echo(f"quota of {name}: {human_size(limits[0]) if limits[0] else 'no limit'}, "
               f"{limits[1] or 'no limit'} files")


@quota.command("show")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def quota_show(ctx, name: str | None, as_json: bool) -> None:
    """Your quota and usage (administrators: any user's)."""
    with make_client(ctx) as c:
        if name:
            rows = [u for u in c.users() if u["name"] == name]
            if not rows:
                raise InvalidArgument(f"no user {name!r}")
            row = rows[0]
        else:
            row = c.whoami()
            row["name"] = row["user"]
    if as_json:
        emit_json({k: row[k] for k in ("name", "quota_bytes", "quota_files", "used_bytes",
                                       "used_files")})
        return
    click.echo(f"{row['name']}: {_quota_text(row['quota_bytes'], row['used_bytes'], True)}; "
               f"{_quota_text(row['quota_files'], row['used_files'], False)} files")


@click.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("-H", "--human/--bytes", "human", default=True, help="Human sizes.")
@click.argument("paths", nargs=-1)
@click.pass_context
def du(ctx, as_json: bool, human: bool, paths: tuple[str, ...]) -> None:
    """Bytes and files at or below each path (kept current by the masters, no scan)."""
    with make_client(ctx) as c:
        rows = [c.du(stat_if_dir_meant(c, p)) for p in paths or ("/",)]
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        size = human_size(r["bytes"]) if human else str(r["bytes"])
        click.echo(f"{size:>11}  {r['files']:>9} files  {r['path']}")


@click.command("audit", context_settings=CONTEXT)
@click.option("-n", "--limit", default=50, show_default=True, type=click.IntRange(1, 10_000),
              help="How many of the newest records.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def audit(ctx, limit: int, as_json: bool) -> None:
    """Recent refusals, identity changes and what administrators did with their rights."""
    with make_client(ctx) as c:
        records = c.audit(limit)
    if as_json:
        emit_json(records)
        return
    for r in records:
        click.echo(f"{format_time(r['at_ms'])}  {r['who']:<34} {r['op']:<14} {r['target']:<24} "
                   f"{r['result']}")


COMMANDS = [login, logout, whoami, user, service_account, token, visibility, chown, quota, du]
