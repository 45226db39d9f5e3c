"""OIDC sign-in end to end: real `oidc-provider-mock` servers (separate processes on loopback),
a real LocalCluster, and the real CLI, whose authorization-code + PKCE flow is driven the way a
browser would (the provider's login form, then the redirect to the CLI's loopback listener).

Refusals covered: an identity with no user while auto-create is off, a wrong audience, an
expired ID token (from a provider issuing already-expired tokens), a bad signature (a key not in
the issuer's key set, under its real key id and under an unknown one), `alg: none`, an HMAC
algorithm, an unknown issuer, a replayed ID token and a disabled user."""
from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
from typing import NamedTuple

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import RSAKey

from cli.localcluster import LocalCluster, free_port
from gfs.errors import FailedPrecondition, PermissionDenied, Unauthenticated
from tests.integration.polling import wait_for

OPTS = {"master": {"election-timeout": 0.3}}
ALICE = {"sub": "alice-sub", "email": "alice@example.com", "email_verified": True,
         "preferred_username": "alice"}
DAVE = {"sub": "dave-sub", "email": "dave@example.com", "email_verified": True,
        "preferred_username": "dave"}
CLIENT_ID = "gfs-cli"


def start_provider(tmp_path, name: str, *extra: str, module: str = "oidc_provider_mock",
                   claims: dict = ALICE) -> tuple[subprocess.Popen, str]:
    """An OIDC provider server on 127.0.0.1 (its issuer URL is what clients reach it by):
    oidc-provider-mock, or the device-flow provider of tests/integration/device_provider.py."""
    port = free_port("127.0.0.1")
    log = open(tmp_path / f"{name}.log", "w")
    host = ["-H", "127.0.0.1", "-p"] if module == "oidc_provider_mock" else ["--port"]
    proc = subprocess.Popen([sys.executable, "-m", module, *host, str(port),
                             "--user-claims", json.dumps(claims), *extra],
                            stdout=log, stderr=subprocess.STDOUT)
    issuer = f"http://127.0.0.1:{port}"

    def up():
        try:
            return requests.get(issuer + "/.well-known/openid-configuration", timeout=1).ok
        except requests.RequestException:
            assert proc.poll() is None, f"the provider {name} exited: see {log.name}"
            return False
    wait_for(up, 30, f"the OIDC provider {name}", interval=0.1)
    return proc, issuer


class World(NamedTuple):
    cluster: LocalCluster
    issuer: str                     # oidc-provider-mock
    stale_issuer: str               # oidc-provider-mock issuing already-expired ID tokens
    device_issuer: str              # tests/integration/device_provider.py


@pytest.fixture(scope="module")
def world(tmp_path_factory, make_module_cluster):
    tmp = tmp_path_factory.mktemp("oidc")
    procs = []
    try:
        good, issuer = start_provider(tmp, "provider")
        stale, stale_issuer = start_provider(tmp, "expiring", "--token-max-age", "-600")
        devices, device_issuer = start_provider(tmp, "devices",
                                                module="tests.integration.device_provider",
                                                claims=DAVE)
        procs += [good, stale, devices]
        cluster = make_module_cluster(masters=1, options=OPTS)
        with cluster.client() as admin:
            admin.oidc_add(issuer, CLIENT_ID)                   # links only, for now
            admin.oidc_add(stale_issuer, CLIENT_ID, auto_create=True)
            admin.oidc_add(device_issuer, CLIENT_ID, auto_create=True)
            admin.user_add("bob")
        yield World(cluster, issuer, stale_issuer, device_issuer)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)


def gfs(cluster, config_dir, *args: str, token: str = "") -> subprocess.CompletedProcess:
    env = {**cluster.cli_env(token), "GFS_CONFIG_DIR": str(config_dir)}
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True,
                          text=True, env=env, timeout=60)


def browser_login(cluster, config_dir, issuer: str, *extra: str, sub: str = "alice-sub"):
    """`gfs login --oidc ISSUER --no-browser`, with this test as the person at the browser:
    open the printed URL, submit the provider's form as `sub`, follow the redirect to the CLI."""
    # oidc-provider-mock authenticates every client at its token endpoint (any secret will do).
    env = {**cluster.cli_env(""), "GFS_CONFIG_DIR": str(config_dir),
           "GFS_OIDC_CLIENT_SECRET": "mock-accepts-any"}
    env.pop("GFS_TOKEN")
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "login", "--oidc", issuer,
                             "--no-browser", "--wait", "30", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        printed = []
        for line in proc.stderr:
            printed.append(line)
            if line.startswith(issuer + "/oauth2/authorize?"):
                url = line.strip()
                break
        else:
            out, _ = proc.communicate(timeout=30)
            return proc.returncode, out, "".join(printed)
        assert "code_challenge_method=S256" in url and "nonce=" in url and "state=" in url
        browser = requests.Session()
        assert browser.get(url, timeout=10).status_code == 200          # the login form
        answer = browser.post(url, data={"sub": sub}, allow_redirects=False, timeout=10)
        assert answer.status_code == 302, answer.text
        back = answer.headers["location"]
        assert re.match(r"http://127\.0\.0\.1:\d+/callback\?code=", back), back
        assert browser.get(back, timeout=10).status_code == 200         # the CLI's listener
        out, err = proc.communicate(timeout=60)
        return proc.returncode, out, "".join(printed) + err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sign_in_through_the_browser_flow_refused_without_auto_create_then_creates_the_user(
        world, tmp_path):
    cluster, issuer = world.cluster, world.issuer
    code, out, err = browser_login(cluster, tmp_path, issuer)
    assert code == 1 and err.splitlines()[-1] == (
        f"gfs: permission denied: no gfs user is linked to alice@example.com at {issuer}, and "
        f"this issuer does not create users (an administrator can: gfs oidc link {issuer} "
        f"alice@example.com USER, or gfs oidc add {issuer} ... --auto-create --replace)")
    assert "Traceback" not in err and not (tmp_path / "token").exists()

    assert gfs(cluster, tmp_path, "oidc", "add", issuer, "--client-id", CLIENT_ID,
               "--auto-create", "--token-ttl", "2h", "--replace", token=cluster.admin_token
               ).returncode == 0
    code, out, err = browser_login(cluster, tmp_path, issuer)
    assert code == 0, err
    assert out.startswith(f"signed in as alice@example.com at {issuer}: gfs user alice "
                          "(created now), token 'oidc-")
    saved = tmp_path / "token"
    assert oct(saved.stat().st_mode & 0o777) == "0o600"
    me = json.loads(gfs(cluster, tmp_path, "whoami", "--json", token=saved.read_text().strip()
                        ).stdout)
    assert (me["user"], me["admin"], me["scopes"]) == ("alice", False, ["*"])
    assert me["token"].startswith("oidc-")

    # The token works, for alice's things only.
    env_token = saved.read_text().strip()
    assert gfs(cluster, tmp_path, "mkdir", "/alice/from-oidc", token=env_token).returncode == 0
    denied = gfs(cluster, tmp_path, "mkdir", "/bob/x", token=env_token)
    assert denied.returncode == 1 and denied.stderr.startswith("gfs: not found: /bob")
    with cluster.client() as admin:
        tokens = [t for t in admin.tokens(all_users=True) if t["principal"] == "alice"]
        assert len(tokens) == 1 and 0 < tokens[0]["expires_ms"] - tokens[0]["created_ms"] <= 2 * 3600_000
        config = admin.oidc_config()
    assert [(x["identity"], x["user"], x["how"]) for x in config["links"]] == [
        ("alice@example.com", "alice", "auto")]

    # Signing in again from this machine replaces the token; a disabled user is refused.
    first = env_token
    code, out, err = browser_login(cluster, tmp_path, issuer)
    assert code == 0 and f"at {issuer}: gfs user alice, token 'oidc-" in out
    assert "revoked" in gfs(cluster, tmp_path, "whoami", token=first).stderr
    with cluster.client() as admin:
        admin.user_set("alice", disabled=True)
    try:
        code, out, err = browser_login(cluster, tmp_path, issuer)
        assert code == 1 and err.splitlines()[-1] == "gfs: permission denied: user 'alice' is disabled"
    finally:
        with cluster.client() as admin:
            admin.user_set("alice", disabled=False)


def test_wrong_audience_is_refused(world, tmp_path):
    cluster, issuer = world.cluster, world.issuer
    code, out, err = browser_login(cluster, tmp_path, issuer, "--client-id", "someone-else")
    assert code == 1 and err.splitlines()[-1] == (
        "gfs: unauthenticated: ID token audience 'someone-else' is not this cluster's client "
        f"id '{CLIENT_ID}'")


def test_expired_id_token_is_refused(world, tmp_path):
    cluster, stale_issuer = world.cluster, world.stale_issuer
    code, out, err = browser_login(cluster, tmp_path, stale_issuer)
    last = err.splitlines()[-1]
    assert code == 1 and last.startswith("gfs: unauthenticated: the ID token expired "), err
    assert "leeway 60 s" in last


def forged(issuer: str, key: RSAKey, *, kid: str | None, alg: str = "RS256", **claims) -> str:
    now = int(time.time())
    body = {"iss": issuer, "aud": CLIENT_ID, "sub": "alice-sub", "email": "alice@example.com",
            "email_verified": True, "iat": now, "exp": now + 300, **claims}
    header = {"alg": alg, **({"kid": kid} if kid else {})}
    return jwt.encode(header, body, key, algorithms=[alg])


def test_bad_signatures_and_unsigned_tokens_are_refused_and_audited(world):
    cluster, issuer = world.cluster, world.issuer
    real_kid = requests.get(issuer + "/jwks", timeout=5).json()["keys"][0]["kid"]
    impostor = RSAKey.generate_key(2048)
    cases = {
        "same kid, other key": (forged(issuer, impostor, kid=real_kid),
                                f"the ID token's signature does not verify with {issuer}'s key"),
        "unknown kid": (forged(issuer, impostor, kid="not-published"),
                        "is signed with a key ('not-published') that"),
        "alg none": (_unsigned({"iss": issuer, "aud": CLIENT_ID, "sub": "alice-sub"}),
                     "the ID token is not signed (alg 'none')"),
        "HMAC": (forged(issuer, _hmac_key(), kid=None, alg="HS256"),
                 "is signed with HS256; accepted are"),
        "not a JWT": ("hello", "not a signed JWT"),
    }
    with cluster.client(token="") as anonymous:
        for what, (id_token, message) in cases.items():
            with pytest.raises(Unauthenticated, match=re.escape(message)):
                anonymous.oidc_login(issuer, id_token, host="test")
            print(what, "refused")
        # The real key with a valid token would pass: the refusals above are the signature's.
        with pytest.raises(Unauthenticated, match="not configured on this cluster"):
            anonymous.oidc_login("https://unknown.example.com", forged(issuer, impostor, kid=None))
    with cluster.client() as admin:
        audit = [r for r in admin.audit(200) if r["op"] == "oidc_refused"]
    reasons = [r["result"] for r in audit]
    assert any("signature does not verify" in r for r in reasons)
    assert any("alg 'none'" in r for r in reasons)
    assert any("https://unknown.example.com is not configured" in r for r in reasons)
    assert all(r["who"] == "anonymous" for r in audit)


def _unsigned(claims: dict) -> str:
    """An `alg: none` JWT, as an attacker would write one."""
    part = lambda obj: base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def _hmac_key():
    from joserfc.jwk import OctKey
    return OctKey.generate_key(256)


def test_an_issuer_that_cannot_be_reached_is_a_clear_error_not_a_retry(world):
    cluster = world.cluster
    dead = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    with cluster.client() as admin:
        admin.oidc_add(dead, CLIENT_ID)
    started = time.monotonic()
    with cluster.client(token="") as anonymous, pytest.raises(
            FailedPrecondition, match=re.escape(f"cannot fetch the discovery document {dead}/")):
        anonymous.oidc_login(dead, forged(dead, RSAKey.generate_key(2048), kid="k"))
    assert time.monotonic() - started < 10


def test_unknown_issuer_is_refused_by_the_cli(world, tmp_path):
    cluster = world.cluster
    result = gfs(cluster, tmp_path, "login", "--oidc", "https://idp.nowhere.example",
                 "--no-browser")
    assert result.returncode == 1 and result.stderr == (
        "gfs: not found: issuer https://idp.nowhere.example is not configured on this cluster "
        "(an administrator adds it: gfs oidc add)\n")
    misused = gfs(cluster, tmp_path, "login", "--device")
    assert misused.returncode == 2 and "go with --oidc ISSUER_URL" in misused.stderr


def test_device_flow_needs_an_issuer_that_offers_it(world, tmp_path):
    """oidc-provider-mock has no device authorization endpoint: the CLI says so plainly."""
    cluster, issuer = world.cluster, world.issuer
    result = gfs(cluster, tmp_path, "login", "--oidc", issuer, "--device")
    assert result.returncode == 1 and result.stderr == (
        f"gfs: failed precondition: {issuer} offers no device sign-in (its discovery document "
        "has no device_authorization_endpoint); sign in with a browser\n")


def device_login(cluster, config_dir, issuer: str, action: str = "approve"):
    """`gfs login --oidc ISSUER --device`, with this test as the person on another device who
    types the code shown (approving or denying it)."""
    env = {**cluster.cli_env(""), "GFS_CONFIG_DIR": str(config_dir)}
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "login", "--oidc", issuer,
                             "--device", "--wait", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stderr.readline()
        shown = re.match(rf"To sign in, open {re.escape(issuer)}/device/verify\?user_code=(\S+) "
                         r"on any device and enter the code (\S+)$", line.strip())
        assert shown and shown[1] == shown[2], line
        answer = requests.post(issuer + "/device/verify", timeout=10,
                               data={"user_code": shown[2], "action": action})
        assert answer.status_code == 200
        out, err = proc.communicate(timeout=60)
        return proc.returncode, out, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_device_flow_signs_in_after_the_code_is_approved_elsewhere(world, tmp_path):
    cluster = world.cluster
    issuer = world.device_issuer
    started = time.monotonic()
    code, out, err = device_login(cluster, tmp_path, issuer)
    assert code == 0, err
    assert time.monotonic() - started >= 6      # polled at 1 s, then 5 s more after slow_down
    assert out.startswith(f"signed in as dave@example.com at {issuer}: gfs user dave "
                          "(created now), token 'oidc-")
    token = (tmp_path / "token").read_text().strip()
    assert json.loads(gfs(cluster, tmp_path, "whoami", "--json", token=token).stdout)["user"] == "dave"

    code, out, err = device_login(cluster, tmp_path, issuer, action="deny")
    assert code == 1 and err.splitlines()[-1].startswith(
        f"gfs: unauthenticated: {issuer} sign-in failed: access_denied"), err


def test_only_administrators_configure_issuers_through_the_cli(world, tmp_path):
    cluster, issuer = world.cluster, world.issuer
    with cluster.client() as admin:
        bob = admin.token_create("t", principal="bob")[0]
    denied = gfs(cluster, tmp_path, "oidc", "add", "https://idp.example.com", "--client-id",
                 "x", token=bob)
    assert denied.returncode == 1 and denied.stderr.startswith(
        "gfs: permission denied: token 't' (bob) is not an administrator")
    listed = gfs(cluster, tmp_path, "oidc", "ls", token=cluster.admin_token)
    assert listed.returncode == 0 and issuer in listed.stdout
    with cluster.client(token=bob) as as_bob, pytest.raises(PermissionDenied):
        as_bob.oidc_config()
