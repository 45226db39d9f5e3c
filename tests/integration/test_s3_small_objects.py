"""Small S3 objects on the inline path, end to end: a real cluster with inline files on
(`--inline-max 64KiB`), the gateway serving `builtin:s3`, boto3 as the client. A PutObject of
up to 64 KiB is one `put_inline` log entry carrying the bytes and the object's metadata
(xattrs); a GetObject / HeadObject is answered from one stat (docs/s3.md, Small objects).
The fallback (masters with inline files off: chunks) is what tests/integration/test_s3.py runs."""
from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError

from gfs.errors import GfsError
from tests.integration.s3_cluster import s3_client, start_s3_cluster
from tests.integration.small_cluster import OPTIONS

INLINE_OPTIONS = {**OPTIONS, "master": {**OPTIONS["master"], "inline-max": "64KiB"}}


@pytest.fixture(scope="module")
def s3c(make_module_cluster):
    c = start_s3_cluster(make_module_cluster, options=INLINE_OPTIONS)
    c.alice = s3_client(c.endpoint, c.users["alice"])
    c.alice.create_bucket(Bucket="small")
    return c


def code_of(call, **kwargs) -> str:
    with pytest.raises(ClientError) as err:
        call(**kwargs)
    return err.value.response["Error"]["Code"]


def applied(c) -> int:
    with c.client() as admin:
        return max(s["applied_index"] for s in admin.master_statuses())


def test_a_small_put_is_one_inline_entry_with_its_metadata(s3c):
    s3 = s3c.alice
    body = os.urandom(4096)
    s3.put_object(Bucket="small", Key="warm", Body=b"x")          # the bucket's owner known
    before = applied(s3c)
    put = s3.put_object(Bucket="small", Key="obj", Body=body, ContentType="text/x-small",
                        Metadata={"who": "alice", "n": "1"}, CacheControl="no-cache")
    assert applied(s3c) - before <= 2                    # one entry (+ maybe a loop's)
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    with s3c.client() as admin:
        info = admin.stat("/alice/small/obj")
    assert info.inline and info.chunks == [] and info.size == 4096
    assert info.xattrs["s3.etag"] == put["ETag"]
    assert info.xattrs["s3.content-type"] == "text/x-small"
    assert info.xattrs["s3.meta.who"] == "alice"
    got = s3.get_object(Bucket="small", Key="obj")
    assert got["Body"].read() == body and got["ETag"] == put["ETag"]
    assert (got["ContentType"], got["Metadata"], got["CacheControl"]) == (
        "text/x-small", {"who": "alice", "n": "1"}, "no-cache")
    head = s3.head_object(Bucket="small", Key="obj")
    assert (head["ContentLength"], head["ETag"], head["Metadata"]) == (
        4096, put["ETag"], {"who": "alice", "n": "1"})
    part = s3.get_object(Bucket="small", Key="obj", Range="bytes=100-199")
    assert part["Body"].read() == body[100:200]
    assert part["ContentRange"] == "bytes 100-199/4096"
    assert s3.get_object(Bucket="small", Key="obj", Range="bytes=-7")["Body"].read() == body[-7:]
    assert code_of(s3.get_object, Bucket="small", Key="obj", Range="bytes=4096-") == \
        "InvalidRange"


def master_calls(c, method: str) -> tuple[float, float]:
    """(requests, master RPCs they made) for S3 requests of `method`, from the gateway's
    metrics (gfs_gateway_s3_master_calls)."""
    import urllib.request
    with urllib.request.urlopen(f"http://{c.spec['gateways'][0]['metrics']}/metrics",
                                timeout=10) as page:
        text = page.read().decode()
    figures = {}
    for line in text.splitlines():
        for kind in ("count", "sum"):
            prefix = f'gfs_gateway_s3_master_calls_{kind}{{method="{method}"}} '
            if line.startswith(prefix):
                figures[kind] = float(line[len(prefix):])
    return figures.get("count", 0.0), figures.get("sum", 0.0)


def test_a_small_put_and_get_each_make_one_master_call(s3c):
    """The gateway's whole cost at the masters: one PutInline for the PUT, one stat for the
    GET and the HEAD (the bucket's owner remembered), counted by the gateway itself."""
    s3 = s3c.alice
    body = os.urandom(4096)
    s3.put_object(Bucket="small", Key="counted", Body=b"warm")    # the bucket's owner known
    for method, call in (
            ("PUT", lambda: s3.put_object(Bucket="small", Key="counted", Body=body)),
            ("GET", lambda: s3.get_object(Bucket="small", Key="counted")["Body"].read()),
            ("HEAD", lambda: s3.head_object(Bucket="small", Key="counted"))):
        requests, calls = master_calls(s3c, method)
        call()
        after = master_calls(s3c, method)
        assert (after[0] - requests, after[1] - calls) == (1, 1), method
    assert s3.get_object(Bucket="small", Key="counted")["Body"].read() == body


def test_conditional_gets_of_a_small_object(s3c):
    s3 = s3c.alice
    etag = s3.put_object(Bucket="small", Key="cond", Body=b"conditional")["ETag"]
    assert s3.get_object(Bucket="small", Key="cond", IfMatch=etag)["Body"].read() == \
        b"conditional"
    assert code_of(s3.get_object, Bucket="small", Key="cond", IfMatch='"0"') == \
        "PreconditionFailed"
    assert code_of(s3.get_object, Bucket="small", Key="cond", IfNoneMatch=etag) == "304"
    later = datetime.now(timezone.utc) + timedelta(days=1)
    earlier = datetime.now(timezone.utc) - timedelta(days=1)
    assert code_of(s3.get_object, Bucket="small", Key="cond", IfModifiedSince=later) == "304"
    assert code_of(s3.get_object, Bucket="small", Key="cond", IfUnmodifiedSince=earlier) == \
        "PreconditionFailed"
    assert s3.get_object(Bucket="small", Key="cond",
                         IfModifiedSince=earlier)["Body"].read() == b"conditional"


def test_overwrite_replaces_bytes_and_metadata_and_delete_removes_both(s3c):
    s3 = s3c.alice
    s3.put_object(Bucket="small", Key="over", Body=b"first", Metadata={"old": "yes"},
                  ContentType="text/first")
    second = s3.put_object(Bucket="small", Key="over", Body=b"second!")
    got = s3.get_object(Bucket="small", Key="over")
    assert got["Body"].read() == b"second!" and got["ETag"] == second["ETag"]
    assert got["Metadata"] == {} and got["ContentType"] == "binary/octet-stream"
    big = os.urandom((64 << 10) + 1)                      # over the inline limit: chunks
    s3.put_object(Bucket="small", Key="over", Body=big, Metadata={"big": "1"})
    with s3c.client() as admin:
        assert not admin.stat("/alice/small/over").inline
    got = s3.get_object(Bucket="small", Key="over")
    assert got["Body"].read() == big and got["Metadata"] == {"big": "1"}
    s3.put_object(Bucket="small", Key="over", Body=b"small again", Metadata={"small": "1"})
    with s3c.client() as admin:
        assert admin.stat("/alice/small/over").inline
    assert s3.head_object(Bucket="small", Key="over")["Metadata"] == {"small": "1"}
    s3.delete_object(Bucket="small", Key="over")
    assert code_of(s3.get_object, Bucket="small", Key="over") == "NoSuchKey"
    assert code_of(s3.head_object, Bucket="small", Key="over") == "404"


def test_limit_sizes_empty_objects_nested_keys_and_checksums(s3c):
    s3 = s3c.alice
    exact = os.urandom(64 << 10)
    s3.put_object(Bucket="small", Key="exact", Body=exact)
    s3.put_object(Bucket="small", Key="empty", Body=b"", Metadata={"e": "1"})
    s3.put_object(Bucket="small", Key="deep/er/key.txt", Body=b"nested")   # parents made
    sha = s3.put_object(Bucket="small", Key="summed", Body=b"checked",
                        ChecksumAlgorithm="SHA256")["ChecksumSHA256"]
    with s3c.client() as admin:
        for path in ("exact", "empty", "deep/er/key.txt", "summed"):
            assert admin.stat(f"/alice/small/{path}").inline, path
    assert s3.get_object(Bucket="small", Key="exact")["Body"].read() == exact
    empty = s3.get_object(Bucket="small", Key="empty")
    assert empty["Body"].read() == b"" and empty["Metadata"] == {"e": "1"}
    assert empty["ETag"] == '"d41d8cd98f00b204e9800998ecf8427e"'
    assert s3.get_object(Bucket="small", Key="deep/er/key.txt")["Body"].read() == b"nested"
    summed = s3.get_object(Bucket="small", Key="summed", ChecksumMode="ENABLED")
    assert summed["Body"].read() == b"checked" and summed["ChecksumSHA256"] == sha
    assert code_of(s3.put_object, Bucket="small", Key="deep/er/key.txt/under",
                   Body=b"x") == "InvalidArgument"           # a key under an object
    listed = s3.list_objects_v2(Bucket="small", Prefix="deep/")["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [("deep/er/key.txt", 6)]


def test_a_bucket_deleted_behind_the_gateways_back_is_no_such_bucket(s3c):
    s3 = s3c.alice
    s3.create_bucket(Bucket="fleeting")
    s3.put_object(Bucket="fleeting", Key="k", Body=b"v")       # the owner is remembered
    with s3c.client() as admin:                                # deleted not through S3
        admin.delete("/alice/fleeting", recursive=True, skip_trash=True)
    for key in ("k2", "a/b/c"):
        assert code_of(s3.put_object, Bucket="fleeting", Key=key, Body=b"v") == "NoSuchBucket"
    assert code_of(s3.get_object, Bucket="fleeting", Key="k") == "NoSuchBucket"
    with s3c.client() as admin, pytest.raises(GfsError) as err:
        admin.stat("/alice/fleeting")                          # never made again by a PUT
    assert err.value.code == "NOT_FOUND"


def test_a_small_object_reads_back_through_gfs_get_and_gfs_put_reads_through_s3(s3c,
                                                                                 tmp_path):
    s3 = s3c.alice
    body = os.urandom(3000)
    s3.put_object(Bucket="small", Key="shared.bin", Body=body)
    out, src = tmp_path / "out", tmp_path / "src"
    src.write_bytes(b"from the cli")
    env = s3c.cli_env(token=s3c.users["alice"].token)
    for argv in (["get", "/alice/small/shared.bin", str(out)],
                 ["put", str(src), "/alice/small/cli.txt"]):
        subprocess.run([sys.executable, "-m", "cli.main", *argv], env=env, check=True,
                       capture_output=True, timeout=60)
    assert out.read_bytes() == body
    got = s3.get_object(Bucket="small", Key="cli.txt")
    assert got["Body"].read() == b"from the cli" and got["ETag"].endswith('-1"')


def test_an_acknowledged_small_put_survives_kill_9_of_the_master(s3c):
    s3 = s3c.alice
    body = os.urandom(5000)
    etag = s3.put_object(Bucket="small", Key="durable", Body=body,
                         Metadata={"kept": "yes"})["ETag"]
    for d in s3c.daemons():
        if d["name"].startswith("master"):
            s3c.kill(d["name"])
            s3c.start(d["name"])
    s3c.wait_healthy()
    with s3c.client() as admin:
        assert admin.read("/alice/small/durable") == body
    got = s3.get_object(Bucket="small", Key="durable")
    assert got["Body"].read() == body and got["ETag"] == etag
    assert got["Metadata"] == {"kept": "yes"}
    s3.put_object(Bucket="small", Key="after", Body=io.BytesIO(b"after the restart"))
    assert s3.get_object(Bucket="small", Key="after")["Body"].read() == b"after the restart"
