"""The plain REST API (`builtin:rest`) with a real gateway in front of a real cluster, driven by
curl: put/get/range/list/mkdir/rename/delete, permissions (another user's token, revoked and
expired tokens, anonymous on private and public files), bad input that gets a JSON error and
never takes the gateway down, and a small hypothesis fuzz."""
from __future__ import annotations

import http.client
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from small_cluster import cluster_with_people
from tests.integration.gateway_procs import GatewayProc
from tests.integration.polling import wait_for

CHUNK = 1 << 20


@pytest.fixture(scope="module")
def cluster(make_module_cluster):
    c = cluster_with_people(make_module_cluster, "rest")
    added = subprocess.run([sys.executable, "-m", "cli.main", "route", "add", "rest", "--path",
                            "/v1/*", "--to", "builtin:rest"], capture_output=True, text=True,
                           env=c.cli_env(), timeout=60)          # as the README has it
    assert added.returncode == 0, added.stderr
    with c.client() as admin:
        c.carol, _ = admin.token_create("short", principal="alice", ttl_s=3)
    return c


@pytest.fixture(scope="module")
def gw(cluster, tmp_path_factory):
    with GatewayProc(tmp_path_factory.mktemp("gw"), None, masters=cluster.master_addresses(),
                     token=cluster.admin_token) as g:
        wait_for(lambda: _status(g, "/v1/openapi.json") == 200, 20, "the rest route", 0.1)
        yield g


def _status(gw, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


def curl(gw, *args: str, token: str | None = None, data: bytes | None = None) -> tuple[int, bytes, dict]:
    """curl ARGS against the gateway: (status, body, response headers)."""
    cmd = ["curl", "-sS", "-D", "-", "--max-time", "60"]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    args = [a.replace("GW", f"http://127.0.0.1:{gw.port}") for a in args]
    done = subprocess.run(cmd + args, input=data, capture_output=True, timeout=90)
    assert done.returncode == 0, done.stderr
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    while head.startswith(b"HTTP/1.1 100"):
        head, _, body = body.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), body, headers


def error_of(body: bytes) -> dict:
    err = json.loads(body)["error"]
    assert set(err) == {"code", "message"} and err["message"] and "\n" not in err["message"]
    return err


def test_put_get_range_head_list_mkdir_rename_delete(cluster, gw, tmp_path):
    alice = cluster.alice
    data = random.Random(1).randbytes(2 * CHUNK + 12345)
    src = tmp_path / "data.bin"
    src.write_bytes(data)
    status, body, _ = curl(gw, "-X", "POST", "GW/v1/files/alice/docs?mkdir", token=alice)
    assert status == 201 and json.loads(body)["path"] == "/alice/docs"
    status, body, _ = curl(gw, "-T", str(src), "GW/v1/files/alice/docs/data.bin", token=alice)
    assert status == 201, body
    assert json.loads(body)["size"] == len(data) and json.loads(body)["type"] == "file"
    # streamed from stdin, no Content-Length (chunked), into missing parents
    status, body, _ = curl(gw, "-T", "-", "GW/v1/files/alice/deep/er/piped.bin?parents",
                           token=alice, data=data[:1000])
    assert status == 201 and json.loads(body)["size"] == 1000
    status, body, headers = curl(gw, "GW/v1/files/alice/docs/data.bin", token=alice)
    assert status == 200 and body == data and headers["content-length"] == str(len(data))
    assert headers["accept-ranges"] == "bytes" and headers["etag"]
    for rng, (lo, hi) in (("0-0", (0, 1)), (f"{CHUNK - 5}-{CHUNK + 5}", (CHUNK - 5, CHUNK + 6)),
                          ("-10", (len(data) - 10, len(data))), (f"{2 * CHUNK}-", (2 * CHUNK, len(data)))):
        status, body, headers = curl(gw, "-H", f"Range: bytes={rng}",
                                     "GW/v1/files/alice/docs/data.bin", token=alice)
        assert status == 206 and body == data[lo:hi], rng
        assert headers["content-range"] == f"bytes {lo}-{hi - 1}/{len(data)}"
    # the same over HTTP/2 (h2c, prior knowledge)
    status, body, _ = curl(gw, "--http2-prior-knowledge", "-T", "-",
                           "GW/v1/files/alice/docs/h2.bin", token=alice, data=data[:70_000])
    assert status == 201, body
    status, body, headers = curl(gw, "--http2-prior-knowledge", "-H", "Range: bytes=10-69999",
                                 "GW/v1/files/alice/docs/h2.bin", token=alice)
    assert status == 206 and body == data[10:70_000]
    status, body, _ = curl(gw, "--http2-prior-knowledge", "-I", "GW/v1/files/alice/nope",
                           token=alice)
    assert status == 404 and not body.strip()
    status, body, headers = curl(gw, "-I", "GW/v1/files/alice/docs/data.bin", token=alice)
    assert status == 200 and not body.strip() and headers["content-length"] == str(len(data))
    assert headers["x-gfs-type"] == "file"
    # create-only, and overwrite
    status, body, _ = curl(gw, "-T", str(src), "-H", "If-None-Match: *",
                           "GW/v1/files/alice/docs/data.bin", token=alice)
    assert status == 412 and error_of(body)["code"] == "PRECONDITION_FAILED"
    status, body, _ = curl(gw, "-T", "-", "GW/v1/files/alice/docs/data.bin?overwrite=false",
                           token=alice, data=b"x")
    assert status == 409 and error_of(body)["code"] == "ALREADY_EXISTS"
    # listing, paged
    for i in range(5):
        assert curl(gw, "-T", "-", f"GW/v1/files/alice/docs/n{i}", token=alice, data=b"%d" % i)[0] == 201
    names, after = [], ""
    while True:
        status, body, _ = curl(gw, f"GW/v1/files/alice/docs/?list&limit=2&after={after}", token=alice)
        page = json.loads(body)
        assert status == 200 and len(page["entries"]) <= 2
        names += [e["name"] for e in page["entries"]]
        if page["next"] is None:
            break
        after = page["next"]
    assert names == ["data.bin", "h2.bin", "n0", "n1", "n2", "n3", "n4"]
    status, body, _ = curl(gw, "GW/v1/files/alice/docs", token=alice)
    assert status == 409 and "?list" in error_of(body)["message"]
    # rename (by path or by URL), then delete
    status, body, _ = curl(gw, "-X", "POST", "GW/v1/files/alice/docs/n0?rename=/alice/n0-moved",
                           token=alice)
    assert status == 200 and json.loads(body) == {"path": "/alice/n0-moved", "from": "/alice/docs/n0"}
    status, _, _ = curl(gw, "-X", "POST", "GW/v1/files/alice/n0-moved?rename=/v1/files/alice/docs/n0",
                        token=alice)
    assert status == 200
    status, body, _ = curl(gw, "-X", "DELETE", "GW/v1/files/alice/docs", token=alice)
    assert status == 409 and error_of(body)["code"] == "FAILED_PRECONDITION"   # not empty
    status, body, _ = curl(gw, "-X", "DELETE", "GW/v1/files/alice/docs?recursive", token=alice)
    assert status == 200
    status, body, _ = curl(gw, "GW/v1/files/alice/docs/data.bin", token=alice)
    assert status == 404 and error_of(body)["code"] == "NOT_FOUND"
    status, body, _ = curl(gw, "GW/v1/openapi.json")
    doc = json.loads(body)
    assert status == 200 and doc["openapi"].startswith("3.") and "/v1/files/{path}" in doc["paths"]


def test_permissions(cluster, gw):
    alice, bob = cluster.alice, cluster.bob
    assert curl(gw, "-T", "-", "GW/v1/files/alice/secret", token=alice, data=b"s")[0] == 201
    # bob, anonymous: alice's home is private (not even its existence shows)
    for token in (bob, None):
        status, body, _ = curl(gw, "GW/v1/files/alice/secret", token=token)
        assert status == 404 and error_of(body)["code"] == "NOT_FOUND"
    for token in (bob, None):
        status, body, _ = curl(gw, "-T", "-", "GW/v1/files/alice/other", token=token, data=b"b")
        assert status == 404 and error_of(body)["code"] == "NOT_FOUND"
    # public: anyone reads, nobody else writes or deletes
    with cluster.client(token=alice) as c:
        c.mkdir("/alice/pub")
        c.set_visibility("/alice/pub", "public")
    assert curl(gw, "-T", "-", "GW/v1/files/alice/pub/page", token=alice, data=b"hello")[0] == 201
    for token in (bob, None):
        status, body, _ = curl(gw, "GW/v1/files/alice/pub/page", token=token)
        assert (status, body) == (200, b"hello")
        status, body, _ = curl(gw, "-X", "DELETE", "GW/v1/files/alice/pub/page", token=token)
        assert status == 403 and error_of(body)["code"] == "PERMISSION_DENIED"
    # bad, expired and revoked tokens: 401 with a JSON error
    status, body, headers = curl(gw, "GW/v1/files/alice/pub/page", token="gfs_nonsense")
    assert status == 401 and error_of(body)["code"] == "UNAUTHENTICATED"
    assert headers["www-authenticate"].startswith("Bearer")
    status, body, _ = curl(gw, "-H", "Authorization: Basic YWxpY2U6eA==", "GW/v1/files/alice/pub/page")
    assert status == 401 and error_of(body)["code"] == "UNAUTHENTICATED"
    wait_for(lambda: curl(gw, "GW/v1/files/alice/secret", token=cluster.carol)[0] == 401, 10,
             "the 3 s token to expire", 0.5)
    with cluster.client(token=alice) as c:
        spare, _ = c.token_create("spare")
        assert curl(gw, "GW/v1/files/alice/secret", token=spare)[1] == b"s"
        c.token_revoke("spare")
    status, body, _ = curl(gw, "GW/v1/files/alice/secret", token=spare)
    assert status == 401 and error_of(body)["code"] == "UNAUTHENTICATED"


def test_bad_input_gets_a_json_error(cluster, gw):
    alice = cluster.alice
    assert curl(gw, "-T", "-", "GW/v1/files/alice/ten", token=alice, data=b"0123456789")[0] == 201
    cases = [
        (["GW/v1/files/alice/a//b"], 400, "INVALID_ARGUMENT"),
        (["--path-as-is", "GW/v1/files/alice/../bob"], 400, "INVALID_ARGUMENT"),
        (["GW/v1/files/alice/%ff"], 400, "INVALID_ARGUMENT"),
        (["GW/v1/files/alice/x%00y"], 400, "INVALID_ARGUMENT"),
        (["-H", "Range: bytes=20-", "GW/v1/files/alice/ten"], 416, "RANGE_NOT_SATISFIABLE"),
        (["-H", "Range: bytes=5-2", "GW/v1/files/alice/ten"], 400, "INVALID_RANGE"),
        (["-H", "Range: bytes=0-1,4-5", "GW/v1/files/alice/ten"], 400, "INVALID_RANGE"),
        (["GW/v1/files/alice/ten?list&limit=0"], 400, "INVALID_ARGUMENT"),
        (["-X", "POST", "GW/v1/files/alice/ten"], 400, "INVALID_ARGUMENT"),
        (["-X", "POST", "GW/v1/files/alice/z?rename=relative"], 400, "INVALID_ARGUMENT"),
        (["-X", "PATCH", "GW/v1/files/alice/ten"], 405, "METHOD_NOT_ALLOWED"),
        (["-T", "-", "GW/v1/files/"], 400, "INVALID_ARGUMENT"),
        (["-T", "-", "GW/v1/files/alice/nodir/x"], 404, "NOT_FOUND"),
        (["GW/v1/nothing"], 404, "NOT_FOUND"),
    ]
    for args, status, code in cases:
        got, body, _ = curl(gw, *args, token=alice, data=b"")
        assert (got, error_of(body)["code"]) == (status, code), (args, body)
    # a body shorter than its Content-Length, then the connection closes: nothing is stored
    truncated_put(gw, "/v1/files/alice/cut", alice, announced=100_000, sent=5_000)
    # a Content-Length that lies the other way: the surplus is a bad next request
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(_put_head("/v1/files/alice/short", alice, 3) + b"abcdefgh")
        reply = _read_all(s)
    assert reply.startswith(b"HTTP/1.1 201")
    assert curl(gw, "GW/v1/files/alice/short", token=alice)[1] == b"abc"
    wait_for(lambda: curl(gw, "GW/v1/files/alice/cut", token=alice)[0] == 404, 10,
             "the cut upload to stay invisible")
    assert gw.proc.poll() is None and _status(gw, "/v1/openapi.json") == 200


def _put_head(path: str, token: str, length: int) -> bytes:
    return (f"PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def _read_all(s: socket.socket) -> bytes:
    out = b""
    s.settimeout(10)
    try:
        while chunk := s.recv(65536):
            out += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return out


def truncated_put(gw, path: str, token: str, announced: int, sent: int) -> None:
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(_put_head(path, token, announced) + os.urandom(sent))
        time.sleep(0.3)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(method=st.sampled_from(["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS"]),
       path=st.one_of(st.binary(max_size=30), st.text(max_size=20).map(str.encode)),
       query=st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=20),
       range_=st.one_of(st.none(), st.text(st.characters(min_codepoint=32, max_codepoint=126),
                                            max_size=20)))
def test_fuzz_never_crashes_and_errors_are_json(cluster, gw, method, path, query, range_):
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20)
    target = "/v1/files/alice/fuzz/" + "".join(
        chr(b) if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "/.-_") else f"%{b:02X}"
        for b in path) + ("?" + query if query else "")
    headers = {"Authorization": f"Bearer {cluster.alice}"}
    if range_ is not None:
        headers["Range"] = range_
    try:
        conn.request(method, target, body=b"fuzz" if method in ("PUT", "POST") else None,
                     headers=headers)
        resp = conn.getresponse()
        body = resp.read()
    except http.client.InvalidURL:
        return
    finally:
        conn.close()
    assert resp.status < 500, (target, body)
    if resp.status >= 400 and method != "HEAD":
        error_of(body)


def readme_examples() -> str:
    """The README's curl block (after its `rest-examples` marker), without its `export` line."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("<!-- rest-examples:", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    return "\n".join(line for line in block.splitlines() if not line.startswith("export "))


def test_the_readme_curl_examples_work_as_written(cluster, gw, tmp_path):
    (tmp_path / "report.pdf").write_bytes(b"%PDF-1.4 " + bytes(range(256)) * 40)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(os.urandom(5000))
    env = {**os.environ, "GW": f"http://127.0.0.1:{gw.port}", "TOKEN": cluster.alice}
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", readme_examples()], cwd=tmp_path,
                          env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert (tmp_path / "copy.pdf").read_bytes() == (tmp_path / "report.pdf").read_bytes()
    out = done.stdout
    assert (tmp_path / "report.pdf").read_bytes()[:100] in out
    assert b'"name":"report.pdf"' in out and b'"openapi"' in out
    with cluster.client(token=cluster.alice) as c:
        assert c.read("/alice/docs/2026.pdf") == (tmp_path / "report.pdf").read_bytes()
        assert not c.exists("/alice/backup")


def test_large_bodies_stream_through_in_bounded_memory(cluster, gw, tmp_path):
    size = 40 * CHUNK + 777
    src, back = tmp_path / "big.bin", tmp_path / "back.bin"
    with open(src, "wb") as f:
        for _ in range(40):
            f.write(os.urandom(CHUNK))
        f.write(os.urandom(777))
    before = gw.rss_kib()
    status, body, _ = curl(gw, "-T", str(src), "GW/v1/files/alice/big.bin", token=cluster.alice)
    assert status == 201 and json.loads(body)["size"] == size
    status, _, _ = curl(gw, "-o", str(back), "GW/v1/files/alice/big.bin", token=cluster.alice)
    assert status == 200
    grown = gw.rss_kib() - before
    assert back.read_bytes() == src.read_bytes()
    assert grown < 20 * 1024, f"the gateway grew by {grown} KiB moving 2 x 40 MiB"
