"""The S3 API end to end: a real cluster, the gateway serving `builtin:s3` (started by
`gfs cluster up --s3`), boto3 as the client (docs/s3.md)."""
from __future__ import annotations

import datetime
import hashlib
import io
import os
import urllib.error
import urllib.request

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from tests.integration.s3_cluster import new_s3_user, s3_client, start_s3_cluster


@pytest.fixture(scope="module")
def s3c(make_module_cluster):
    return start_s3_cluster(make_module_cluster)


@pytest.fixture(scope="module")
def alice(s3c):
    client = s3_client(s3c.endpoint, s3c.users["alice"])
    client.create_bucket(Bucket="alpha")
    return client


def code_of(call, *args, **kwargs) -> str:
    with pytest.raises(ClientError) as err:
        call(*args, **kwargs)
    return err.value.response["Error"]["Code"]


def test_put_get_head_with_metadata_ranges_and_conditions(alice, s3c):
    body = os.urandom(300_000)
    put = alice.put_object(Bucket="alpha", Key="dir/sub/obj.bin", Body=body,
                           ContentType="application/x-test", Metadata={"who": "alice"},
                           CacheControl="no-cache", ContentDisposition="attachment")
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    got = alice.get_object(Bucket="alpha", Key="dir/sub/obj.bin")
    assert got["Body"].read() == body
    assert (got["ContentType"], got["Metadata"], got["CacheControl"],
            got["ContentDisposition"]) == ("application/x-test", {"who": "alice"}, "no-cache",
                                           "attachment")
    head = alice.head_object(Bucket="alpha", Key="dir/sub/obj.bin")
    assert head["ContentLength"] == len(body) and head["ETag"] == put["ETag"]
    part = alice.get_object(Bucket="alpha", Key="dir/sub/obj.bin", Range="bytes=1000-1999")
    assert part["Body"].read() == body[1000:2000]
    assert part["ContentRange"] == f"bytes 1000-1999/{len(body)}"
    tail = alice.get_object(Bucket="alpha", Key="dir/sub/obj.bin", Range="bytes=-10")
    assert tail["Body"].read() == body[-10:]
    assert code_of(alice.get_object, Bucket="alpha", Key="dir/sub/obj.bin",
                   Range=f"bytes={len(body)}-") == "InvalidRange"
    # conditions
    assert alice.get_object(Bucket="alpha", Key="dir/sub/obj.bin",
                            IfMatch=put["ETag"])["ContentLength"] == len(body)
    assert code_of(alice.get_object, Bucket="alpha", Key="dir/sub/obj.bin",
                   IfMatch='"0000"') == "PreconditionFailed"
    assert code_of(alice.get_object, Bucket="alpha", Key="dir/sub/obj.bin",
                   IfNoneMatch=put["ETag"]) == "304"
    later = head["LastModified"] + datetime.timedelta(hours=1)
    assert code_of(alice.get_object, Bucket="alpha", Key="dir/sub/obj.bin",
                   IfModifiedSince=later) == "304"
    assert code_of(alice.get_object, Bucket="alpha", Key="dir/sub/obj.bin",
                   IfUnmodifiedSince=head["LastModified"] - datetime.timedelta(hours=1)
                   ) == "PreconditionFailed"
    # response-* overrides
    over = alice.get_object(Bucket="alpha", Key="dir/sub/obj.bin",
                            ResponseContentType="text/csv", ResponseContentDisposition="inline")
    assert (over["ContentType"], over["ContentDisposition"]) == ("text/csv", "inline")
    assert code_of(alice.get_object, Bucket="alpha", Key="nope") == "NoSuchKey"
    assert code_of(alice.get_object, Bucket="no-such-bucket", Key="x") == "NoSuchBucket"
    # the object is a gfs file where the mapping says
    with s3c.client() as admin:
        assert admin.read("/alice/alpha/dir/sub/obj.bin") == body


def test_buckets_list_head_location_delete(alice, s3c):
    alice.create_bucket(Bucket="temp-bucket")
    assert "temp-bucket" in [b["Name"] for b in alice.list_buckets()["Buckets"]]
    assert code_of(alice.create_bucket, Bucket="temp-bucket") == "BucketAlreadyOwnedByYou"
    bob = s3_client(s3c.endpoint, s3c.users["bob"])
    assert code_of(bob.create_bucket, Bucket="temp-bucket") == "BucketAlreadyExists"
    alice.head_bucket(Bucket="temp-bucket")
    assert alice.get_bucket_location(Bucket="temp-bucket")["LocationConstraint"] is None
    alice.put_object(Bucket="temp-bucket", Key="k", Body=b"x")
    assert code_of(alice.delete_bucket, Bucket="temp-bucket") == "BucketNotEmpty"
    alice.delete_object(Bucket="temp-bucket", Key="k")
    alice.delete_bucket(Bucket="temp-bucket")
    assert code_of(alice.head_bucket, Bucket="temp-bucket") == "404"
    assert code_of(alice.create_bucket, Bucket="Bad_Name") == "InvalidBucketName"


def test_listing_pages_with_and_without_delimiter(alice):
    alice.create_bucket(Bucket="listing")
    keys = sorted([f"a/{i:02d}" for i in range(12)] + [f"b/c/{i}" for i in range(5)] +
                  ["a-b", "a+plus", "top", "zz/end", "a/sp ace"])
    for key in keys:
        alice.put_object(Bucket="listing", Key=key, Body=key.encode())
    pages = alice.get_paginator("list_objects_v2").paginate(Bucket="listing",
                                                            PaginationConfig={"PageSize": 7})
    listed = [o["Key"] for p in pages for o in p.get("Contents", [])]
    assert listed == sorted(keys, key=lambda k: k.encode())
    v1 = alice.get_paginator("list_objects").paginate(Bucket="listing",
                                                      PaginationConfig={"PageSize": 5})
    assert [o["Key"] for p in v1 for o in p.get("Contents", [])] == listed
    top = alice.list_objects_v2(Bucket="listing", Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["a/", "b/", "zz/"]
    assert [o["Key"] for o in top["Contents"]] == ["a+plus", "a-b", "top"]
    paged = alice.get_paginator("list_objects_v2").paginate(
        Bucket="listing", Delimiter="/", PaginationConfig={"PageSize": 2})
    seen = [(p.get("CommonPrefixes"), p.get("Contents")) for p in paged]
    flat = [x["Prefix"] for cp, _ in seen for x in cp or []] + \
        [x["Key"] for _, c in seen for x in c or []]
    assert sorted(flat) == ["a+plus", "a-b", "a/", "b/", "top", "zz/"]
    inner = alice.list_objects_v2(Bucket="listing", Prefix="b/", Delimiter="/")
    assert [p["Prefix"] for p in inner["CommonPrefixes"]] == ["b/c/"]
    after = alice.list_objects_v2(Bucket="listing", Prefix="a/", StartAfter="a/09")
    assert [o["Key"] for o in after["Contents"]] == ["a/10", "a/11", "a/sp ace"]
    one = alice.list_objects_v2(Bucket="listing", MaxKeys=1)
    assert one["IsTruncated"] and one["KeyCount"] == 1
    enc = alice.list_objects(Bucket="listing", Prefix="a/sp", EncodingType="url")
    assert [o["Key"] for o in enc["Contents"]] == ["a/sp%20ace"]   # asked for: not decoded


def test_copy_delete_objects_and_folder_markers(alice):
    alice.create_bucket(Bucket="copies")
    alice.put_object(Bucket="copies", Key="src", Body=b"source bytes", Metadata={"a": "1"})
    out = alice.copy_object(Bucket="copies", Key="dst/copied", CopySource="copies/src")
    assert out["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(b"source bytes").hexdigest()}"'
    copied = alice.get_object(Bucket="copies", Key="dst/copied")
    assert copied["Body"].read() == b"source bytes" and copied["Metadata"] == {"a": "1"}
    alice.copy_object(Bucket="copies", Key="replaced", CopySource="copies/src",
                      MetadataDirective="REPLACE", Metadata={"b": "2"})
    assert alice.head_object(Bucket="copies", Key="replaced")["Metadata"] == {"b": "2"}
    assert code_of(alice.copy_object, Bucket="copies", Key="src",
                   CopySource="copies/src") == "InvalidRequest"
    alice.put_object(Bucket="copies", Key="folder/", Body=b"")
    assert alice.head_object(Bucket="copies", Key="folder/")["ContentLength"] == 0
    keys = [f"many/{i}" for i in range(30)]
    for key in keys:
        alice.put_object(Bucket="copies", Key=key, Body=b"-")
    result = alice.delete_objects(Bucket="copies", Delete={
        "Objects": [{"Key": k} for k in keys + ["never-was"]]})
    assert sorted(d["Key"] for d in result["Deleted"]) == sorted(keys + ["never-was"])
    listed = [o["Key"] for o in alice.list_objects_v2(Bucket="copies").get("Contents", [])]
    assert listed == ["dst/copied", "folder/", "replaced", "src"]   # no empty many/ left
    alice.delete_object(Bucket="copies", Key="folder/")
    assert code_of(alice.head_object, Bucket="copies", Key="folder/") == "404"


def test_awkward_keys_are_refused_or_mapped_as_documented(alice):
    alice.create_bucket(Bucket="awkward")
    for key in ("a//b", "/lead", "x/../y", "dot/./z"):
        assert code_of(alice.put_object, Bucket="awkward", Key=key, Body=b"1") \
            == "InvalidArgument", key
    alice.put_object(Bucket="awkward", Key="obj", Body=b"1")
    assert code_of(alice.put_object, Bucket="awkward", Key="obj/child", Body=b"2") \
        == "InvalidArgument"
    alice.put_object(Bucket="awkward", Key="pre/child", Body=b"3")
    assert code_of(alice.put_object, Bucket="awkward", Key="pre", Body=b"4") == "InvalidArgument"
    assert code_of(alice.put_object, Bucket="awkward", Key="marker/", Body=b"data") \
        == "InvalidArgument"
    assert alice.get_object(Bucket="awkward", Key="obj")["Body"].read() == b"1"


def test_multipart_upload_composes_parts_without_copying(alice, s3c):
    alice.create_bucket(Bucket="multi")
    data = os.urandom((5 << 20) + 4096)
    alice.upload_fileobj(io.BytesIO(data), "multi", "big/object",
                         Config=TransferConfig(multipart_threshold=5 << 20,
                                               multipart_chunksize=5 << 20, max_concurrency=2))
    head = alice.head_object(Bucket="multi", Key="big/object")
    md5s = hashlib.md5(data[:5 << 20]).digest() + hashlib.md5(data[5 << 20:]).digest()
    assert head["ETag"] == f'"{hashlib.md5(md5s).hexdigest()}-2"'
    assert alice.get_object(Bucket="multi", Key="big/object")["Body"].read() == data
    with s3c.client() as admin:
        info = admin.stat("/alice/multi/big/object")
        assert info.size == len(data)
        assert not admin.list("/alice/.s3-multipart") or \
            all(not e.is_dir for e in admin.list("/alice/.s3-multipart"))
    # part rules, ListParts, ListMultipartUploads, abort
    upload = alice.create_multipart_upload(Bucket="multi", Key="small", Metadata={"m": "1"})
    uid = upload["UploadId"]
    e1 = alice.upload_part(Bucket="multi", Key="small", UploadId=uid, PartNumber=1,
                           Body=b"a" * 10)["ETag"]
    e2 = alice.upload_part(Bucket="multi", Key="small", UploadId=uid, PartNumber=2,
                           Body=b"b" * 10)["ETag"]
    assert [p["PartNumber"] for p in alice.list_parts(Bucket="multi", Key="small",
                                                      UploadId=uid)["Parts"]] == [1, 2]
    assert [u["UploadId"] for u in alice.list_multipart_uploads(Bucket="multi")["Uploads"]] \
        == [uid]
    parts = [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]
    assert code_of(alice.complete_multipart_upload, Bucket="multi", Key="small", UploadId=uid,
                   MultipartUpload={"Parts": parts}) == "EntityTooSmall"
    assert code_of(alice.complete_multipart_upload, Bucket="multi", Key="small", UploadId=uid,
                   MultipartUpload={"Parts": parts[::-1]}) == "InvalidPartOrder"
    assert code_of(alice.complete_multipart_upload, Bucket="multi", Key="small", UploadId=uid,
                   MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e2}]}) == "InvalidPart"
    done = alice.complete_multipart_upload(Bucket="multi", Key="small", UploadId=uid,
                                           MultipartUpload={"Parts": parts[:1]})
    assert done["ETag"].endswith('-1"')
    small = alice.get_object(Bucket="multi", Key="small")
    assert small["Body"].read() == b"a" * 10 and small["Metadata"] == {"m": "1"}
    gone = alice.create_multipart_upload(Bucket="multi", Key="aborted")["UploadId"]
    alice.abort_multipart_upload(Bucket="multi", Key="aborted", UploadId=gone)
    assert code_of(alice.list_parts, Bucket="multi", Key="aborted", UploadId=gone) \
        == "NoSuchUpload"
    copy_id = alice.create_multipart_upload(Bucket="multi", Key="copied")["UploadId"]
    part = alice.upload_part_copy(Bucket="multi", Key="copied", UploadId=copy_id, PartNumber=1,
                                  CopySource="multi/big/object", CopySourceRange="bytes=0-99")
    alice.complete_multipart_upload(Bucket="multi", Key="copied", UploadId=copy_id,
                                    MultipartUpload={"Parts": [{
                                        "PartNumber": 1,
                                        "ETag": part["CopyPartResult"]["ETag"]}]})
    assert alice.get_object(Bucket="multi", Key="copied")["Body"].read() == data[:100]


def test_presigned_get_and_put_with_plain_http(alice):
    alice.create_bucket(Bucket="presign")
    put_url = alice.generate_presigned_url("put_object", Params={"Bucket": "presign",
                                                                 "Key": "p/one"}, ExpiresIn=60)
    request = urllib.request.Request(put_url, data=b"by presigned PUT", method="PUT")
    assert urllib.request.urlopen(request, timeout=10).status == 200
    get_url = alice.generate_presigned_url("get_object", Params={"Bucket": "presign",
                                                                 "Key": "p/one"}, ExpiresIn=60)
    assert urllib.request.urlopen(get_url, timeout=10).read() == b"by presigned PUT"
    tampered = get_url.replace("p/one", "p/two")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(tampered, timeout=10)
    assert err.value.code == 403 and b"SignatureDoesNotMatch" in err.value.read()
    expired = alice.generate_presigned_url("get_object", Params={"Bucket": "presign",
                                                                 "Key": "p/one"}, ExpiresIn=1)
    import time
    time.sleep(2)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(expired, timeout=10)
    assert err.value.code == 403 and b"expired" in err.value.read()


def test_permissions_other_users_revoked_tokens_and_anonymous(alice, s3c):
    alice.create_bucket(Bucket="private-one")
    alice.put_object(Bucket="private-one", Key="secret", Body=b"s")
    alice.create_bucket(Bucket="public-one", ACL="public-read")
    alice.put_object(Bucket="public-one", Key="open", Body=b"o")
    bob = s3_client(s3c.endpoint, s3c.users["bob"])
    assert code_of(bob.get_object, Bucket="private-one", Key="secret") in ("NoSuchBucket",
                                                                          "AccessDenied")
    assert code_of(bob.put_object, Bucket="private-one", Key="x", Body=b"x") in (
        "NoSuchBucket", "AccessDenied")
    assert bob.get_object(Bucket="public-one", Key="open")["Body"].read() == b"o"
    assert code_of(bob.put_object, Bucket="public-one", Key="x", Body=b"x") == "AccessDenied"
    anonymous = s3_client(s3c.endpoint, None)
    assert anonymous.get_object(Bucket="public-one", Key="open")["Body"].read() == b"o"
    assert [o["Key"] for o in anonymous.list_objects_v2(Bucket="public-one")["Contents"]] \
        == ["open"]
    assert code_of(anonymous.get_object, Bucket="private-one", Key="secret") in (
        "NoSuchBucket", "AccessDenied")
    assert code_of(anonymous.put_object, Bucket="public-one", Key="y", Body=b"y") \
        == "AccessDenied"
    assert code_of(anonymous.list_buckets) == "AccessDenied"
    # a wrong secret, an unknown key, a revoked token, a scoped token
    user = s3c.users["alice"]
    wrong = s3_client(s3c.endpoint, type(user)("alice", "", user.access_key, "x" * 40))
    assert code_of(wrong.list_buckets) == "SignatureDoesNotMatch"
    unknown = s3_client(s3c.endpoint, type(user)("alice", "", "GK" + "0" * 18, "x" * 40))
    assert code_of(unknown.list_buckets) == "InvalidAccessKeyId"
    with s3c.client() as admin:
        short = new_s3_user(s3c, admin, "alice", "short-lived")
        readonly = new_s3_user(s3c, admin, "alice", "read-only",
                               scopes=["storage.alice.files:read,list"])
    ro = s3_client(s3c.endpoint, readonly)
    assert ro.get_object(Bucket="private-one", Key="secret")["Body"].read() == b"s"
    assert code_of(ro.put_object, Bucket="private-one", Key="w", Body=b"w") == "AccessDenied"
    temp = s3_client(s3c.endpoint, short)
    assert temp.get_object(Bucket="private-one", Key="secret")["Body"].read() == b"s"
    with s3c.client(token=s3c.users["alice"].token) as own:
        own.token_revoke("short-lived")
    import time
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            temp.get_object(Bucket="private-one", Key="secret")
            time.sleep(0.1)
        except ClientError as err:
            assert err.response["Error"]["Code"] == "AccessDenied"
            assert "revoked" in err.response["Error"]["Message"]
            break
    else:
        pytest.fail("a revoked token's S3 keys still work")


def test_boto3_streaming_upload_with_trailing_checksum(alice, s3c):
    """What boto3 sends by default over TLS: STREAMING-UNSIGNED-PAYLOAD-TRAILER with a CRC32
    trailer. It chooses that for https endpoints only, so this client is told https and the
    request is sent over plain HTTP after signing (the bytes are boto3's own)."""
    user = s3c.users["alice"]
    tls = s3_client(s3c.endpoint.replace("http://", "https://"), user)
    seen = {}

    def plain_http(request, **kwargs):
        seen["sha"] = request.headers.get("x-amz-content-sha256")
        seen["trailer"] = request.headers.get("x-amz-trailer")
        request.url = request.url.replace("https://", "http://", 1)
    tls.meta.events.register("before-send.s3.PutObject", plain_http)
    data = os.urandom(200_000)
    alice.create_bucket(Bucket="stream")
    put = tls.put_object(Bucket="stream", Key="trailer", Body=io.BytesIO(data))
    sha = seen["sha"].decode() if isinstance(seen["sha"], bytes) else seen["sha"]
    assert sha == "STREAMING-UNSIGNED-PAYLOAD-TRAILER" and seen["trailer"]
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert alice.get_object(Bucket="stream", Key="trailer")["Body"].read() == data


def test_signed_chunks_are_each_verified_and_bad_bodies_store_nothing(alice, s3c):
    from tests.integration.s3_wire import signed_chunked_put
    alice.create_bucket(Bucket="chunks")
    user = s3c.users["alice"]
    data = os.urandom(40_000)
    status, _ = signed_chunked_put(s3c.endpoint, user, "/chunks/good", data)
    assert status == 200
    assert alice.get_object(Bucket="chunks", Key="good")["Body"].read() == data
    status, body = signed_chunked_put(s3c.endpoint, user, "/chunks/tampered", data,
                                      tamper_chunk=2)
    assert status == 403 and b"SignatureDoesNotMatch" in body
    status, body = signed_chunked_put(s3c.endpoint, user, "/chunks/cut", data, cut=20_000)
    assert status == 400 and b"IncompleteBody" in body
    for key in ("tampered", "cut"):
        assert code_of(alice.head_object, Bucket="chunks", Key=key) == "404"


def test_bad_input_fuzz_never_crashes_the_server(alice, s3c):
    """Garbage signatures and truncated or lying aws-chunked bodies: an S3 error every time,
    nothing stored, and the gateway keeps serving."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests.integration.s3_wire import encoded_length, raw, signed_chunked_put
    alice.create_bucket(Bucket="fuzz")
    user = s3c.users["alice"]
    netloc = s3c.endpoint.split("//", 1)[1]
    data = os.urandom(20_000)

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(auth=st.one_of(st.text(max_size=200), st.builds(
               lambda cred, signed, sig: f"AWS4-HMAC-SHA256 Credential={cred}, "
               f"SignedHeaders={signed}, Signature={sig}",
               st.text(max_size=80), st.text(max_size=40), st.text(max_size=70))),
           sha=st.sampled_from(["UNSIGNED-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
                                "zz", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b"
                                "7852b855"]),
           cut=st.integers(0, 21_000), tamper=st.integers(-1, 4))
    def check(auth, sha, cut, tamper):
        safe = "".join(c for c in auth if 32 <= ord(c) < 127)
        status, body = raw(netloc, "PUT", "/fuzz/garbage", {
            "Authorization": safe, "x-amz-date": "20260101T000000Z",
            "x-amz-content-sha256": sha}, b"x" * 10)
        assert 400 <= status < 500 and b"<Code>" in body, (status, body[:200])
        status, body = signed_chunked_put(s3c.endpoint, user, "/fuzz/chunked", data,
                                          chunk=4096, tamper_chunk=tamper, cut=cut)
        if 0 <= tamper < 5 or cut < encoded_length(len(data), 4096):
            assert status != 200
        if status != 200:
            assert 400 <= status < 500 and b"<Code>" in body, (status, body[:200])
    check()
    assert code_of(alice.head_object, Bucket="fuzz", Key="garbage") == "404"
    listed = alice.list_objects_v2(Bucket="fuzz").get("Contents", [])
    for obj in listed:                   # only ever a whole, verified upload
        assert alice.get_object(Bucket="fuzz", Key=obj["Key"])["Body"].read() == data
    alice.put_object(Bucket="fuzz", Key="after", Body=b"still serving")
