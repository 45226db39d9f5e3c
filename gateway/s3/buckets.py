"""Bucket operations (ListBuckets, CreateBucket, HeadBucket, DeleteBucket, GetBucketLocation)
and which user a bucket belongs to (bucket names are one namespace across users, as in S3)."""
from __future__ import annotations

import time

from gateway.s3 import xmldoc
from gateway.s3.errors import S3Error, not_implemented
from gateway.s3.naming import bucket_path, valid_bucket
from gateway.s3.objects import require_bucket
from gateway.s3.request import Call, s3_error
from gfs.aio import AsyncClient
from gfs.errors import GfsError

CACHE_S = 5.0
ACLS = {"private": "", "public-read": "public"}


class Owners:
    """bucket -> owner. Found with the gateway's own client (existence only: every operation
    then runs as the caller, who sees NoSuchBucket for a private bucket of someone else):
    the caller's home first, then every user's, remembered for a few seconds — the caller's
    own bucket too, which spares each request a round trip to the masters. A remembered owner
    only routes the request: each operation that needs the bucket to exist checks it again
    when its own call finds nothing (require_bucket), so a bucket deleted meanwhile is still
    NoSuchBucket and never re-created."""

    def __init__(self, admin: AsyncClient, user_names):
        self.admin = admin
        self.user_names = user_names              # () -> [user names]
        self._cache: dict[str, tuple[str, float]] = {}

    async def _has(self, user: str, bucket: str) -> bool:
        try:
            return (await self.admin.stat(bucket_path(user, bucket))).is_dir
        except GfsError as err:
            if err.code in ("NOT_FOUND", "FAILED_PRECONDITION", "INVALID_ARGUMENT"):
                return False
            raise s3_error(err) from None

    async def find(self, bucket: str, caller: str, fresh: bool = False) -> str:
        """The owner of `bucket` ("" for none); `fresh`: never the caller from memory
        (CreateBucket, which must know whether the caller's bucket is there now)."""
        cached = self._cache.get(bucket)
        if cached and time.monotonic() - cached[1] >= CACHE_S:
            cached = None
        if caller:
            if cached and cached[0] == caller and not fresh:
                return caller
            if await self._has(caller, bucket):
                self._remember(bucket, caller)
                return caller
            if cached and cached[0] == caller:
                self.forget(bucket)
                cached = None
        if cached:
            return cached[0]
        for user in self.user_names():
            if user != caller and await self._has(user, bucket):
                self._remember(bucket, user)
                return user
        return ""

    def _remember(self, bucket: str, user: str) -> None:
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[bucket] = (user, time.monotonic())

    def forget(self, bucket: str) -> None:
        self._cache.pop(bucket, None)


async def list_buckets(call: Call) -> None:
    user = call.require_user()
    try:
        entries = await call.client.list(f"/{user}", brief=True)
    except GfsError as err:
        if err.code != "NOT_FOUND":              # no home (an administrator): no buckets
            raise s3_error(err, "NoSuchBucket") from None
        entries = []
    buckets = [("Bucket", [("Name", e.path.rsplit("/", 1)[1]),
                           ("CreationDate", xmldoc.iso_time(e.ctime_ms))])
               for e in entries if e.is_dir and valid_bucket(e.path.rsplit("/", 1)[1])]
    await call.xml(200, xmldoc.document("ListAllMyBucketsResult", [
        ("Owner", [("ID", user), ("DisplayName", user)]), ("Buckets", buckets)]))


async def create_bucket(call: Call, owners: Owners) -> None:
    user = call.require_user()
    acl = call.header("x-amz-acl") or "private"
    if acl not in ACLS:
        raise not_implemented(f"the canned ACL {acl[:40]!r} (private and public-read are)")
    body = await call.payload().read_all(64 << 10)
    if body.strip():
        xmldoc.parse(body, "CreateBucketConfiguration")
    other = await owners.find(call.bucket, user, fresh=True)
    if other and other != user:
        raise S3Error("BucketAlreadyExists", "The requested bucket name is not available. The "
                      "bucket namespace is shared by all users of the system. Please select a "
                      "different name and try again.", 409, BucketName=call.bucket)
    path = bucket_path(user, call.bucket)
    if other == user:
        raise S3Error("BucketAlreadyOwnedByYou", "Your previous request to create the named "
                      "bucket succeeded and you already own it.", 409, BucketName=call.bucket)
    try:
        await call.client.mkdir(path, parents=True)      # an administrator may have no home yet
        if ACLS[acl]:
            await call.client.set_visibility(path, ACLS[acl])
    except GfsError as err:
        raise s3_error(err, "NoSuchBucket") from None
    await call.empty(200, [("location", "/" + call.bucket)])


async def head_bucket(call: Call, region: str) -> None:
    await require_bucket(call)
    await call.empty(200, [("x-amz-bucket-region", region)])


async def delete_bucket(call: Call, owners: Owners) -> None:
    await require_bucket(call)
    try:
        await call.client.delete(bucket_path(call.owner, call.bucket), recursive=False,
                                 skip_trash=True)
    except GfsError as err:
        if err.code == "FAILED_PRECONDITION":
            raise S3Error("BucketNotEmpty", "The bucket you tried to delete is not empty", 409,
                          BucketName=call.bucket) from None
        raise s3_error(err, "NoSuchBucket", BucketName=call.bucket) from None
    owners.forget(call.bucket)
    await call.empty(204)


async def get_bucket_location(call: Call, region: str) -> None:
    await require_bucket(call)
    await call.xml(200, xmldoc.document("LocationConstraint", [],
                                        text=None if region == "us-east-1" else region))
