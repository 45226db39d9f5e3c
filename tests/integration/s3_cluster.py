"""A small cluster serving the S3 API (`gfs cluster up --s3`), with users alice and bob, each
with S3 credentials, and boto3 clients for them."""
from __future__ import annotations

from dataclasses import dataclass

import boto3
from botocore.config import Config

from cli.localcluster import free_port
from tests.integration.small_cluster import OPTIONS


@dataclass
class S3User:
    name: str
    token: str
    access_key: str
    secret: str


def s3_client(endpoint: str, user: S3User | None, **config):
    """A boto3 S3 client (path style, SigV4, no retries); `user` None: anonymous."""
    from botocore import UNSIGNED
    cfg = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                 signature_version=UNSIGNED if user is None else "s3v4", **config)
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", config=cfg,
                        aws_access_key_id=user.access_key if user else None,
                        aws_secret_access_key=user.secret if user else None)


def start_s3_cluster(factory, domain: str | None = None, options: dict | None = None):
    """`domain`: also serve virtual-host style requests for BUCKET.DOMAIN; `options`: the
    daemons' (default: small_cluster.OPTIONS)."""
    c = factory(masters=1, options=options or OPTIONS, start=False)
    for _ in range(3):
        c.add_chunkserver()
    c.set_s3(f"127.0.0.1:{free_port()}", domain)
    c.up()
    c.endpoint = "http://" + c.spec["gateways"][0]["listen"]
    c.users = {}
    with c.client() as admin:
        for name in ("alice", "bob"):
            admin.user_add(name)
            c.users[name] = new_s3_user(c, admin, name, "s3")
    return c


def new_s3_user(c, admin, name: str, token_name: str, **kwargs) -> S3User:
    token = admin.token_create(token_name, principal=name, **kwargs)[0]
    with c.client(token=token) as own:
        keys = own.s3_credentials()
    return S3User(name, token, keys["access_key_id"], keys["secret_access_key"])
