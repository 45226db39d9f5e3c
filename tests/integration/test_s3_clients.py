"""The S3 API with the tools people use, unmodified, against a real cluster (`cluster up --s3`,
docs/s3.md): the AWS CLI (PyPI's awscli), Debian's rclone, s3fs (fsspec) with pandas/pyarrow
reading and writing Parquet, boto3 with virtual-host addressing, paginated listings and a large
DeleteObjects, boto3's managed transfers. The issue's sizes (a 2,500-key listing, a 1,000-key
DeleteObjects, 1 GiB transfers) run in the long profile (GFS_CHAOS_LONG=1, docs/chaos.md)."""
from __future__ import annotations

import filecmp
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.integration.s3_cluster import S3User, s3_client, start_s3_cluster

DOMAIN = "s3.localtest"             # never resolved: the client connects to 127.0.0.1
LONG = os.environ.get("GFS_CHAOS_LONG")   # the long profile (docs/chaos.md): the sizes


@pytest.fixture(scope="module")
def s3c(make_module_cluster):
    return start_s3_cluster(make_module_cluster, domain=DOMAIN)


@pytest.fixture(scope="module")
def alice(s3c):
    return s3_client(s3c.endpoint, s3c.users["alice"])


def client_env(user: S3User, home: Path) -> dict:
    """The environment for a client process: this user's keys and nothing of the machine's own
    AWS or rclone settings (a CA bundle, profiles, a config file)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "RCLONE_", "BOTO_"))}
    home.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), AWS_ACCESS_KEY_ID=user.access_key,
               AWS_SECRET_ACCESS_KEY=user.secret, AWS_DEFAULT_REGION="us-east-1",
               AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    return env


def run(argv: list[str], env: dict, timeout: float = 120) -> str:
    """Run a client; its stdout, or a failure that shows what it printed."""
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{argv[:6]} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def make_tree(root: Path) -> dict[str, bytes]:
    """Files as clients meet them: empty, tiny, nested, awkward names, one over the AWS CLI's
    8 MiB multipart threshold (2 parts; rclone's here: 5 MiB parts, 3)."""
    files = {"empty": b"", "one.txt": b"1", "a/b/c/deep.bin": os.urandom(300_000),
             "a/sibling.txt": b"sibling\n", "we ird/ü name+plus=%.txt": b"unicode\n",
             "we ird/tilde~&amp.txt": b"amp\n", "big/multipart.bin": os.urandom(12 << 20)}
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def same_tree(a: Path, b: Path) -> None:
    cmp = filecmp.dircmp(a, b)
    stack = [cmp]
    while stack:
        c = stack.pop()
        assert not (c.left_only or c.right_only or c.diff_files or c.funny_files), c.report()
        _, mismatch, errors = filecmp.cmpfiles(c.left, c.right, c.common_files, shallow=False)
        assert not mismatch and not errors, (c.left, mismatch, errors)
        stack.extend(c.subdirs.values())


# --- the AWS CLI -----------------------------------------------------------------------------

def ls_name(line: str) -> str:
    """The name on a line of `aws s3 ls`: `PRE name/` or `date time size name`."""
    head, sep, rest = line.strip().partition("PRE ")
    return rest if sep and not head else line.split(maxsplit=3)[3]


def test_aws_cli_cp_sync_ls_rm(s3c, alice, tmp_path):
    env = client_env(s3c.users["alice"], tmp_path / "home")

    def aws(*args: str) -> str:
        return run([sys.executable, "-m", "awscli", "--endpoint-url", s3c.endpoint, *args], env)
    src = tmp_path / "src"
    files = make_tree(src)
    aws("s3", "mb", "s3://cli-bucket")
    aws("s3", "cp", "--recursive", "--no-progress", str(src), "s3://cli-bucket/copied/")
    big = alice.head_object(Bucket="cli-bucket", Key="copied/big/multipart.bin")
    assert big["ETag"].endswith('-2"')                     # it went up in parts
    with s3c.client() as admin:                            # where docs/s3.md says
        assert admin.read("/alice/cli-bucket/copied/a/b/c/deep.bin") == files["a/b/c/deep.bin"]
    down = tmp_path / "down"
    aws("s3", "cp", "--recursive", "--no-progress", "s3://cli-bucket/copied/", str(down))
    same_tree(src, down)
    # sync twice: the second run finds nothing to do, both ways
    first = aws("s3", "sync", "--no-progress", str(src), "s3://cli-bucket/synced/")
    assert first.count("upload:") == len(files)
    assert aws("s3", "sync", "--no-progress", str(src), "s3://cli-bucket/synced/") == ""
    back = tmp_path / "back"
    assert aws("s3", "sync", "--no-progress", "s3://cli-bucket/synced/",
               str(back)).count("download:") == len(files)
    assert aws("s3", "sync", "--no-progress", "s3://cli-bucket/synced/", str(back)) == ""
    same_tree(src, back)
    (src / "one.txt").write_bytes(b"changed, longer")      # a change is seen and sent alone
    changed = aws("s3", "sync", "--no-progress", str(src), "s3://cli-bucket/synced/")
    assert len(changed.splitlines()) == 1
    assert changed.endswith("one.txt to s3://cli-bucket/synced/one.txt\n")
    # ls: buckets, one level (prefixes as PRE), everything
    assert "cli-bucket" in aws("s3", "ls")
    top = aws("s3", "ls", "s3://cli-bucket/synced/").splitlines()
    assert sorted(ls_name(line) for line in top) == ["a/", "big/", "empty", "one.txt", "we ird/"]
    listed = aws("s3", "ls", "--recursive", "s3://cli-bucket/synced/").splitlines()
    assert sorted(ls_name(line) for line in listed) == sorted(f"synced/{n}" for n in files)
    # rm --recursive empties the prefix and leaves the rest
    removed = aws("s3", "rm", "--recursive", "s3://cli-bucket/synced/")
    assert removed.count("delete:") == len(files)
    assert alice.list_objects_v2(Bucket="cli-bucket", Prefix="synced/")["KeyCount"] == 0
    assert alice.list_objects_v2(Bucket="cli-bucket", Prefix="copied/")["KeyCount"] == len(files)


def test_aws_cli_s3api_multipart(s3c, alice, tmp_path):
    env = client_env(s3c.users["alice"], tmp_path / "home")

    def api(*args: str) -> dict:
        out = run([sys.executable, "-m", "awscli", "--endpoint-url", s3c.endpoint, "--output",
                   "json", "s3api", *args], env)
        return json.loads(out) if out.strip() else {}
    alice.create_bucket(Bucket="cli-multipart")
    parts = [os.urandom(5 << 20), os.urandom(1000)]
    for i, data in enumerate(parts, 1):
        (tmp_path / f"part{i}").write_bytes(data)
    upload = api("create-multipart-upload", "--bucket", "cli-multipart", "--key", "obj",
                 "--metadata", "who=cli", "--content-type", "text/x-parts")["UploadId"]
    etags = {}
    for n in (2, 1):                                       # any order
        etags[n] = api("upload-part", "--bucket", "cli-multipart", "--key", "obj",
                       "--upload-id", upload, "--part-number", str(n),
                       "--body", str(tmp_path / f"part{n}"))["ETag"]
    assert etags[1] == f'"{hashlib.md5(parts[0]).hexdigest()}"'
    listed = api("list-parts", "--bucket", "cli-multipart", "--key", "obj", "--upload-id", upload)
    assert [(p["PartNumber"], p["Size"]) for p in listed["Parts"]] == [(1, 5 << 20), (2, 1000)]
    uploads = api("list-multipart-uploads", "--bucket", "cli-multipart")["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [("obj", upload)]
    (tmp_path / "parts.json").write_text(json.dumps({"Parts": [
        {"PartNumber": n, "ETag": etags[n]} for n in (1, 2)]}))
    done = api("complete-multipart-upload", "--bucket", "cli-multipart", "--key", "obj",
               "--upload-id", upload, "--multipart-upload", f"file://{tmp_path / 'parts.json'}")
    md5s = b"".join(hashlib.md5(p).digest() for p in parts)
    assert done["ETag"] == f'"{hashlib.md5(md5s).hexdigest()}-2"'
    head = api("head-object", "--bucket", "cli-multipart", "--key", "obj")
    assert (head["ContentLength"], head["ContentType"], head["Metadata"]) == (
        len(parts[0]) + 1000, "text/x-parts", {"who": "cli"})
    assert alice.get_object(Bucket="cli-multipart", Key="obj")["Body"].read() == b"".join(parts)
    gone = api("create-multipart-upload", "--bucket", "cli-multipart", "--key", "gone")
    api("abort-multipart-upload", "--bucket", "cli-multipart", "--key", "gone", "--upload-id",
        gone["UploadId"])
    assert "Uploads" not in api("list-multipart-uploads", "--bucket", "cli-multipart")


# --- rclone (Debian's) -----------------------------------------------------------------------

def test_rclone_copy_sync_check_lsf_delete(s3c, alice, tmp_path):
    if not shutil.which("rclone"):
        pytest.skip("rclone is not installed (run.sh setup installs Debian's)")
    user = s3c.users["alice"]
    env = client_env(user, tmp_path / "home")
    env.update(RCLONE_CONFIG=os.devnull, RCLONE_CONFIG_GFS_TYPE="s3",
               RCLONE_CONFIG_GFS_PROVIDER="Other", RCLONE_CONFIG_GFS_ENDPOINT=s3c.endpoint,
               RCLONE_CONFIG_GFS_ACCESS_KEY_ID=user.access_key,
               RCLONE_CONFIG_GFS_SECRET_ACCESS_KEY=user.secret,
               RCLONE_CONFIG_GFS_FORCE_PATH_STYLE="true", RCLONE_CONFIG_GFS_REGION="us-east-1",
               # parts from 5 MiB on, so the 12 MiB file goes up as a multipart upload
               RCLONE_S3_UPLOAD_CUTOFF="5M", RCLONE_S3_CHUNK_SIZE="5M")

    def rclone(*args: str) -> str:
        r = subprocess.run(["rclone", "--retries", "1", "--low-level-retries", "1", *args],
                           env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"rclone {args} exited {r.returncode}:\n{r.stdout}{r.stderr}"
        return r.stdout + r.stderr
    src = tmp_path / "src"
    files = make_tree(src)
    rclone("mkdir", "gfs:rclone-bucket")
    rclone("copy", str(src), "gfs:rclone-bucket/copy")
    assert alice.head_object(Bucket="rclone-bucket",
                             Key="copy/big/multipart.bin")["ETag"].endswith('-3"')
    listed = rclone("lsf", "-R", "--files-only", "gfs:rclone-bucket/copy").split("\n")
    assert sorted(filter(None, listed)) == sorted(files)
    # check compares MD5s (rclone keeps its own for multipart objects, in x-amz-meta-md5chksum)
    sums = {}
    for line in rclone("md5sum", "gfs:rclone-bucket/copy").splitlines():
        digest, name = line.split("  ", 1)
        sums[name] = digest
    assert sums == {name: hashlib.md5(data).hexdigest() for name, data in files.items()}
    checked = rclone("check", str(src), "gfs:rclone-bucket/copy")
    assert "0 differences found" in checked and f"{len(files)} matching files" in checked
    assert "hashes could not be checked" not in checked
    # sync: a changed file and a removed one; a second sync has nothing to do
    (src / "one.txt").write_bytes(b"changed, longer")
    (src / "a" / "sibling.txt").unlink()
    out = rclone("sync", "-v", str(src), "gfs:rclone-bucket/copy")
    assert "one.txt: Copied" in out and "a/sibling.txt: Deleted" in out
    again = rclone("sync", "-v", str(src), "gfs:rclone-bucket/copy")
    assert "Copied" not in again and "Deleted" not in again
    down = tmp_path / "down"
    rclone("copy", "gfs:rclone-bucket/copy", str(down))
    same_tree(src, down)
    rclone("delete", "gfs:rclone-bucket/copy")
    assert rclone("lsf", "-R", "--files-only", "gfs:rclone-bucket") == ""
    assert alice.list_objects_v2(Bucket="rclone-bucket")["KeyCount"] == 0


# --- s3fs (fsspec) with pandas and pyarrow ---------------------------------------------------

def test_s3fs_parquet_written_and_read_through_s3(s3c, alice, monkeypatch):
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq
    import s3fs
    for name in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(name)
    user = s3c.users["alice"]
    opts = {"key": user.access_key, "secret": user.secret, "endpoint_url": s3c.endpoint,
            "client_kwargs": {"region_name": "us-east-1"},
            "default_block_size": 5 << 20}                # writes of > 5 MiB go in parts
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **opts)
    fs.mkdir("parquet-bucket")
    rows = 400_000
    rng = np.random.default_rng(18)
    frame = pd.DataFrame({"id": np.arange(rows), "x": rng.random(rows),
                          "name": [f"row-{i}" for i in range(rows)],
                          "part": [f"p{i % 3}" for i in range(rows)]})
    frame.to_parquet("s3://parquet-bucket/tables/one.parquet", storage_options=opts,
                     compression=None)
    info = fs.info("parquet-bucket/tables/one.parquet")
    assert info["size"] > 5 << 20 and re.search(r'-[2-9]"$', info["ETag"])   # in parts
    back = pd.read_parquet("s3://parquet-bucket/tables/one.parquet", storage_options=opts)
    pd.testing.assert_frame_equal(back, frame)
    column = pq.read_table("parquet-bucket/tables/one.parquet", filesystem=fs, columns=["x"])
    assert column.column("x").to_numpy().tolist() == frame["x"].tolist()   # ranged reads
    # a partitioned dataset: prefixes as directories, read back whole
    frame.to_parquet("s3://parquet-bucket/parted", partition_cols=["part"],
                     storage_options=opts)
    assert sorted(p.rsplit("/", 2)[1] for p in fs.find("parquet-bucket/parted")) == [
        "part=p0", "part=p1", "part=p2"]
    parted = pd.read_parquet("s3://parquet-bucket/parted", storage_options=opts)
    assert sorted(parted["id"].tolist()) == list(range(rows))
    fs.rm("parquet-bucket/parted", recursive=True)
    assert fs.ls("parquet-bucket", refresh=True) == ["parquet-bucket/tables"]
    with s3c.client() as admin:                            # the same bytes a gfs client sees
        assert admin.stat("/alice/parquet-bucket/tables/one.parquet").size == info["size"]


# --- virtual-host style ----------------------------------------------------------------------

def vhost_client(s3c, user: S3User):
    """boto3 with virtual-host addressing under DOMAIN: it signs for BUCKET.s3.localtest:PORT
    and sends that Host header, over a connection to the gateway's 127.0.0.1 address."""
    port = urlsplit(s3c.endpoint).port
    client = boto3.client("s3", endpoint_url=f"http://{DOMAIN}:{port}", region_name="us-east-1",
                          aws_access_key_id=user.access_key, aws_secret_access_key=user.secret,
                          config=Config(s3={"addressing_style": "virtual"},
                                        signature_version="s3v4",   # presigned URLs too
                                        retries={"max_attempts": 1}))

    def to_loopback(request, **kwargs):
        url = urlsplit(request.url)
        request.headers["Host"] = url.netloc
        request.url = url._replace(netloc=f"127.0.0.1:{port}").geturl()
    client.meta.events.register("before-send.s3", to_loopback)
    return client


def test_virtual_host_addressing_end_to_end(s3c, alice):
    v = vhost_client(s3c, s3c.users["alice"])
    seen = []
    v.meta.events.register("before-send.s3", lambda request, **kw: seen.append(
        request.headers["Host"]))
    v.create_bucket(Bucket="vhost-bucket")
    assert seen[-1] == f"vhost-bucket.{DOMAIN}:{urlsplit(s3c.endpoint).port}"
    v.put_object(Bucket="vhost-bucket", Key="dir/k 1", Body=b"by host", Metadata={"v": "1"})
    got = v.get_object(Bucket="vhost-bucket", Key="dir/k 1")
    assert got["Body"].read() == b"by host" and got["Metadata"] == {"v": "1"}
    assert [o["Key"] for o in v.list_objects_v2(Bucket="vhost-bucket")["Contents"]] == ["dir/k 1"]
    assert "vhost-bucket" in [b["Name"] for b in v.list_buckets()["Buckets"]]
    # the same bucket by path style, on the same gateway
    assert alice.get_object(Bucket="vhost-bucket", Key="dir/k 1")["Body"].read() == b"by host"
    v.upload_fileobj(io.BytesIO(os.urandom(6 << 20)), "vhost-bucket", "parts",
                     Config=TransferConfig(multipart_threshold=5 << 20,
                                           multipart_chunksize=5 << 20))
    assert v.head_object(Bucket="vhost-bucket", Key="parts")["ETag"].endswith('-2"')
    url = v.generate_presigned_url("get_object", Params={"Bucket": "vhost-bucket",
                                                         "Key": "dir/k 1"}, ExpiresIn=60)
    parts = urlsplit(url)
    assert parts.hostname == f"vhost-bucket.{DOMAIN}"
    plain = urllib.request.Request(parts._replace(netloc=urlsplit(s3c.endpoint).netloc).geturl(),
                                   headers={"Host": parts.netloc})
    assert urllib.request.urlopen(plain, timeout=10).read() == b"by host"
    v.delete_object(Bucket="vhost-bucket", Key="dir/k 1")
    v.delete_object(Bucket="vhost-bucket", Key="parts")
    v.delete_bucket(Bucket="vhost-bucket")
    assert "vhost-bucket" not in [b["Name"] for b in alice.list_buckets()["Buckets"]]


# --- the sizes -----------------------------------------------------------------------

def put_natively(s3c, user: str, bucket: str, keys: list[str]) -> None:
    """The objects as the user's files, written by the gfs client (one inline write each,
    several times faster than as many PutObjects: what is tested here is the listing and the
    delete; PutObject is everywhere else)."""
    with s3c.client(token=s3c.users[user].token) as own:
        for d in {k.rpartition("/")[0] for k in keys if "/" in k}:
            own.mkdir(f"/{user}/{bucket}/{d}", parents=True)
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda k: own.put(io.BytesIO(k.encode()), f"/{user}/{bucket}/{k}"),
                          keys))


def pages_of(total: int, page: int) -> list[int]:
    return [min(page, total - i) for i in range(0, total, page)]


# (flat keys, keys under 50 prefixes, keys removed by one DeleteObjects, listing page size):
# CI's, then the issue's sizes (2,500 keys, S3's 1,000-key pages and DeleteObjects maximum) in
# the long profile: making 2,500 objects took 7 minutes on the loaded 2-core machine.
LISTING_SIZES = [(480, 120, 300, 250)] + ([(2000, 500, 1000, 1000)] if LONG else [])


@pytest.mark.parametrize("flat_n,nested_n,delete_n,page", LISTING_SIZES,
                         ids=lambda v: str(v))
def test_paginators_over_many_keys_and_one_big_delete_objects(s3c, alice, flat_n, nested_n,
                                                              delete_n, page):
    started = time.monotonic()
    bucket = f"many-keys-{flat_n + nested_n}"
    alice.create_bucket(Bucket=bucket)
    flat = [f"k{i:04d}" for i in range(flat_n)]
    nested = [f"d{i % 50:02d}/k{i:04d}" for i in range(nested_n)]
    put_natively(s3c, "alice", bucket, flat + nested)
    made = time.monotonic()
    everything = sorted(flat + nested)
    sized = {"Bucket": bucket, "PaginationConfig": {"PageSize": page}}
    pages = list(alice.get_paginator("list_objects_v2").paginate(**sized))
    assert [o["Key"] for p in pages for o in p["Contents"]] == everything
    assert [p["KeyCount"] for p in pages] == pages_of(len(everything), page)
    assert [p["IsTruncated"] for p in pages][-1] is False and all(
        p["IsTruncated"] for p in pages[:-1])
    grouped = list(alice.get_paginator("list_objects_v2").paginate(Delimiter="/", **sized))
    prefixes = [c["Prefix"] for p in grouped for c in p.get("CommonPrefixes", [])]
    assert prefixes == [f"d{i:02d}/" for i in range(50)]
    assert [o["Key"] for p in grouped for o in p.get("Contents", [])] == flat
    assert [p["KeyCount"] for p in grouped] == pages_of(flat_n + 50, page)   # keys + prefixes
    v1 = alice.get_paginator("list_objects").paginate(**sized)
    assert [o["Key"] for p in v1 for o in p["Contents"]] == everything
    # one DeleteObjects, quietly
    doomed = flat[:delete_n]
    out = alice.delete_objects(Bucket=bucket, Delete={
        "Objects": [{"Key": k} for k in doomed], "Quiet": True})
    assert not out.get("Errors") and not out.get("Deleted")
    left = [o["Key"] for p in alice.get_paginator("list_objects_v2").paginate(**sized)
            for o in p["Contents"]]
    assert left == sorted(flat[delete_n:] + nested)
    too_many = [{"Key": f"x{i}"} for i in range(1001)]
    with pytest.raises(ClientError) as err:
        alice.delete_objects(Bucket=bucket, Delete={"Objects": too_many})
    assert err.value.response["Error"]["Code"] == "MalformedXML"
    print(f"{flat_n + nested_n} keys made in {made - started:.1f} s, listed three ways and "
          f"{delete_n} deleted in {time.monotonic() - made:.1f} s")


@pytest.mark.parametrize("size", [64 << 20] + ([1 << 30] if LONG else []),
                         ids=lambda s: f"{s >> 20}MiB")
def test_upload_file_and_download_file_in_parallel_parts(s3c, alice, tmp_path, size):
    """boto3's managed transfers: multipart upload with parallel parts, ranged parallel GETs.
    64 MiB in CI; 1 GiB in the long profile (GFS_CHAOS_LONG=1)."""
    alice.create_bucket(Bucket=f"transfer-{size >> 20}")
    src = tmp_path / "src.bin"
    digest = hashlib.md5()
    with open(src, "wb") as f:
        for _ in range(size >> 24):
            piece = os.urandom(16 << 20)
            digest.update(piece)
            f.write(piece)
    config = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20,
                            max_concurrency=8)
    started = time.monotonic()
    alice.upload_file(str(src), f"transfer-{size >> 20}", "object", Config=config)
    up = time.monotonic() - started
    head = alice.head_object(Bucket=f"transfer-{size >> 20}", Key="object")
    assert head["ContentLength"] == size and head["ETag"].endswith(f'-{size // (8 << 20)}"')
    out = tmp_path / "out.bin"
    started = time.monotonic()
    alice.download_file(f"transfer-{size >> 20}", "object", str(out), Config=config)
    down = time.monotonic() - started
    got = hashlib.md5()
    with open(out, "rb") as f:
        while piece := f.read(16 << 20):
            got.update(piece)
    assert got.hexdigest() == digest.hexdigest()
    print(f"{size >> 20} MiB: upload {size / up / 1e6:.0f} MB/s, download "
          f"{size / down / 1e6:.0f} MB/s")
