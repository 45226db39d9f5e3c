"""The S3 API's entry point (`builtin:s3`): who is calling (SigV4, credentials.py), which
bucket and key (path style, or virtual-host style under a configured domain), which operation,
and S3's XML error document for anything that goes wrong — bad input never escapes as a
traceback or takes the worker down."""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote_to_bytes

from gateway.http.exchange import BodyTooLarge, ClientGone, Exchange
from gateway.s3 import buckets, listing, multipart, objects, sigv4, xmldoc
from gateway.s3.buckets import Owners
from gateway.s3.credentials import Credentials
from gateway.s3.errors import S3Error, not_implemented
from gateway.s3.naming import check_bucket
from gateway.s3.readahead import ReadAhead
from gateway.s3.request import Call
from gateway.metrics import GatewayMetrics
from gfs.aio import AsyncClient
from gfs.client import MASTER_CALLS

log = logging.getLogger("gateway.s3")
# The gfs client's calls for S3 requests run here: each blocks a thread for its whole transfer
# (an upload or download of any size), so asyncio's default executor (cores + 4 threads) would
# make a few large transfers hold up every small request behind them.
OFFLOAD = ThreadPoolExecutor(max_workers=64, thread_name_prefix="s3io")
# sub-resources this server does not implement: answered NotImplemented, never as an object op
UNSUPPORTED = ("acl", "policy", "cors", "lifecycle", "versioning", "versions", "tagging",
               "website", "logging", "notification", "replication", "encryption", "object-lock",
               "retention", "legal-hold", "torrent", "restore", "select", "inventory",
               "analytics", "metrics", "accelerate", "requestPayment", "ownershipControls",
               "publicAccessBlock", "intelligent-tiering", "attributes")


class S3App:
    def __init__(self, admin: AsyncClient, credentials: Credentials, region: str = "us-east-1",
                 domains: tuple[str, ...] = (), metrics: GatewayMetrics | None = None):
        self.admin = admin.in_executor(OFFLOAD)
        self.metrics = metrics
        self.credentials = credentials
        self.region = region
        self.domains = tuple(d.lower().strip(".") for d in domains)
        self.owners = Owners(admin, credentials.user_names)
        self.read_ahead = ReadAhead()

    async def __call__(self, ex: Exchange) -> None:
        request_id = os.urandom(8).hex().upper()
        calls = [0]                                # master RPCs this request makes
        counting = MASTER_CALLS.set(calls)
        try:
            await self._serve(ex, request_id)
        except S3Error as err:
            await self._error(ex, err, request_id)
        except (BodyTooLarge, ClientGone):
            raise
        except Exception:                          # a bug: logged, answered, the worker lives
            log.exception("S3 request %s %s failed", ex.head.method, ex.head.path)
            await self._error(ex, S3Error("InternalError", "We encountered an internal error. "
                                          "Please try again.", 500), request_id)
        finally:
            MASTER_CALLS.reset(counting)
            if self.metrics is not None:
                self.metrics.s3_master_calls.labels(ex.head.method).observe(calls[0])

    async def _error(self, ex: Exchange, err: S3Error, request_id: str) -> None:
        if ex.response_started:
            ex.abort()
            return
        body = b"" if ex.head.method == "HEAD" else xmldoc.error_document(
            err.code, err.message, request_id, ex.head.path, err.extra)
        headers = [("content-type", "application/xml"), ("x-amz-request-id", request_id),
                   ("x-amz-id-2", request_id), ("server", "gfs")]
        if ex.head.method == "HEAD":
            headers.append(("x-amz-error-code", err.code))
            await ex.start_response(err.status, headers + [("content-length", "0")], end=True)
            return
        await ex.respond(err.status, body, headers)

    def _address(self, ex: Exchange) -> tuple[str, str]:
        """(bucket, key) from the Host (virtual-host style) or the path (path style)."""
        host = ex.head.authority
        raw = ex.head.path
        try:
            path = unquote_to_bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise S3Error("InvalidURI", "Couldn't parse the specified URI (not UTF-8).",
                          400) from None
        for domain in self.domains:
            if host.endswith("." + domain):
                return check_bucket(host[:-len(domain) - 1]), path[1:]
        bucket, _, key = path[1:].partition("/")
        return (check_bucket(bucket) if bucket else ""), key

    async def _serve(self, ex: Exchange, request_id: str) -> None:
        head = ex.head
        query_pairs = sigv4.parse_query(head.query)
        query = dict(query_pairs)
        bucket, key = self._address(ex)
        caller = await self.credentials.authenticate_soon(head.method, head.path, query_pairs,
                                                          head.headers, head.raw_authority)
        call = Call(ex, head.method, bucket, key, query,
                    self.admin.acting_for(caller.token_hash), caller.user, caller.verified,
                    request_id, caller_key=caller.token_hash or b"")
        for name in UNSUPPORTED:
            if name in query:
                raise not_implemented(f"the ?{name} sub-resource")
        if not bucket:
            if head.method != "GET":
                raise S3Error("MethodNotAllowed", "The specified method is not allowed against "
                              "this resource.", 405)
            await buckets.list_buckets(call)
            return
        if head.method == "PUT" and not key and not query:
            await buckets.create_bucket(call, self.owners)
            return
        call.owner = await self.owners.find(bucket, caller.user)
        if not call.owner:
            raise S3Error("NoSuchBucket", "The specified bucket does not exist.", 404,
                          BucketName=bucket)
        await self._dispatch(call)

    async def _dispatch(self, call: Call) -> None:
        method, q = call.method, call.query
        if not call.key:
            if method in ("GET",) and "location" in q:
                await buckets.get_bucket_location(call, self.region)
            elif method == "GET" and "uploads" in q:
                await multipart.list_uploads(call)
            elif method == "GET":
                await listing.list_objects(call, q.get("list-type") == "2", self.read_ahead)
            elif method == "HEAD":
                await buckets.head_bucket(call, self.region)
            elif method == "DELETE":
                await buckets.delete_bucket(call, self.owners)
            elif method == "POST" and "delete" in q:
                await objects.delete_objects(call)
            elif method == "PUT":
                raise S3Error("BucketAlreadyOwnedByYou", "Your previous request to create the "
                              "named bucket succeeded and you already own it.", 409)
            else:
                raise S3Error("MethodNotAllowed", "The specified method is not allowed against "
                              "this resource.", 405)
            return
        if "uploadId" in q or "uploads" in q:
            await multipart.dispatch(call, lambda b: self._owner_of(b, call.user))
        elif method == "PUT" and call.header("x-amz-copy-source") is not None:
            await objects.copy_object(call, lambda b: self._owner_of(b, call.user))
        elif method == "PUT":
            await objects.put_object(call)
        elif method in ("GET", "HEAD"):
            await objects.get_object(call, head_only=method == "HEAD")
        elif method == "DELETE":
            await objects.delete_object(call)
        else:
            raise S3Error("MethodNotAllowed", "The specified method is not allowed against this "
                          "resource.", 405)

    async def _owner_of(self, bucket: str, caller: str) -> str:
        owner = await self.owners.find(bucket, caller)
        if not owner:
            raise S3Error("NoSuchBucket", "The specified bucket does not exist.", 404,
                          BucketName=bucket)
        return owner
