"""A minimal etcd v3 KV client over grpcio — the same client library, channel options and
retry shape that gfs's own Python client uses, so that the two are measured alike.

etcd's `.proto` files are not shipped by Debian's `etcd-server`, and the bench copies no code
in: the handful of messages it needs (the `etcdserverpb.KV` service's Range, Put, DeleteRange
and Txn, per etcd's documented v3 API) are declared here at run time with protobuf's
descriptor API, fields and numbers as on etcd's wire. Nothing else of etcd's API is declared.
"""
from __future__ import annotations

import random
import threading
import time

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from gfs.transfer import CHANNEL_OPTIONS

_F = descriptor_pb2.FieldDescriptorProto
_BYTES, _INT64, _UINT64, _BOOL = _F.TYPE_BYTES, _F.TYPE_INT64, _F.TYPE_UINT64, _F.TYPE_BOOL
_MSG, _ENUM = _F.TYPE_MESSAGE, _F.TYPE_ENUM

# message name -> [(field, number, type, type name or "", repeated, oneof index or None)]
_MESSAGES: dict[str, list[tuple]] = {
    "ResponseHeader": [("cluster_id", 1, _UINT64), ("member_id", 2, _UINT64),
                       ("revision", 3, _INT64), ("raft_term", 4, _UINT64)],
    "KeyValue": [("key", 1, _BYTES), ("create_revision", 2, _INT64), ("mod_revision", 3, _INT64),
                 ("version", 4, _INT64), ("value", 5, _BYTES), ("lease", 6, _INT64)],
    "RangeRequest": [("key", 1, _BYTES), ("range_end", 2, _BYTES), ("limit", 3, _INT64),
                     ("revision", 4, _INT64), ("serializable", 7, _BOOL),
                     ("keys_only", 8, _BOOL), ("count_only", 9, _BOOL)],
    "RangeResponse": [("header", 1, _MSG, "ResponseHeader"),
                      ("kvs", 2, _MSG, "KeyValue", True), ("more", 3, _BOOL),
                      ("count", 4, _INT64)],
    "PutRequest": [("key", 1, _BYTES), ("value", 2, _BYTES), ("lease", 3, _INT64),
                   ("prev_kv", 4, _BOOL)],
    "PutResponse": [("header", 1, _MSG, "ResponseHeader"), ("prev_kv", 2, _MSG, "KeyValue")],
    "DeleteRangeRequest": [("key", 1, _BYTES), ("range_end", 2, _BYTES), ("prev_kv", 3, _BOOL)],
    "DeleteRangeResponse": [("header", 1, _MSG, "ResponseHeader"), ("deleted", 2, _INT64)],
    "Compare": [("result", 1, _ENUM, "Compare.CompareResult"),
                ("target", 2, _ENUM, "Compare.CompareTarget"), ("key", 3, _BYTES),
                ("version", 4, _INT64, "", False, 0), ("create_revision", 5, _INT64, "", False, 0),
                ("mod_revision", 6, _INT64, "", False, 0), ("value", 7, _BYTES, "", False, 0)],
    "RequestOp": [("request_range", 1, _MSG, "RangeRequest", False, 0),
                  ("request_put", 2, _MSG, "PutRequest", False, 0),
                  ("request_delete_range", 3, _MSG, "DeleteRangeRequest", False, 0)],
    "ResponseOp": [("response_range", 1, _MSG, "RangeResponse", False, 0),
                   ("response_put", 2, _MSG, "PutResponse", False, 0),
                   ("response_delete_range", 3, _MSG, "DeleteRangeResponse", False, 0)],
    "TxnRequest": [("compare", 1, _MSG, "Compare", True), ("success", 2, _MSG, "RequestOp", True),
                   ("failure", 3, _MSG, "RequestOp", True)],
    "TxnResponse": [("header", 1, _MSG, "ResponseHeader"), ("succeeded", 2, _BOOL),
                    ("responses", 3, _MSG, "ResponseOp", True)],
}
_ONEOFS = {"Compare": "target_union", "RequestOp": "request", "ResponseOp": "response"}
_ENUMS = {"Compare": {"CompareResult": ["EQUAL", "GREATER", "LESS", "NOT_EQUAL"],
                      "CompareTarget": ["VERSION", "CREATE", "MOD", "VALUE"]}}
PACKAGE = "etcdserverpb"
GREATER, VERSION = 1, 0


def _build() -> dict[str, type]:
    fd = descriptor_pb2.FileDescriptorProto(name="bench_etcd_kv.proto", package=PACKAGE,
                                            syntax="proto3")
    for name, fields in _MESSAGES.items():
        m = fd.message_type.add(name=name)
        if name in _ONEOFS:
            m.oneof_decl.add(name=_ONEOFS[name])
        for enum, values in _ENUMS.get(name, {}).items():
            e = m.enum_type.add(name=enum)
            for number, value in enumerate(values):
                e.value.add(name=value, number=number)
        for spec in fields:
            fname, number, ftype, tname, repeated, oneof = spec + ("", False, None)[len(spec) - 3:]
            f = m.field.add(name=fname, number=number, type=ftype,
                            label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
            if tname:
                f.type_name = f".{PACKAGE}.{tname}"
            if oneof is not None:
                f.oneof_index = oneof
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
            for name in _MESSAGES}


M = _build()
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def prefix_end(prefix: bytes) -> bytes:
    """The range end that selects every key starting with `prefix` (etcd's convention)."""
    end = bytearray(prefix)
    while end and end[-1] == 0xFF:
        end.pop()
    if not end:
        return b"\0"
    end[-1] += 1
    return bytes(end)


class EtcdUnavailable(Exception):
    """No etcd member answered within the deadline."""


class EtcdKV:
    """Put / get / list / rename against a 3-member etcd: pinned to one member, on an error
    moves to the next member and retries until `deadline` (as etcd's own clients do; a write
    that a follower receives is forwarded to the leader by etcd itself)."""

    def __init__(self, endpoints: list[str], *, deadline: float = 30.0,
                 attempt_timeout: float = 5.0, start: int | None = None):
        self.endpoints = list(endpoints)
        self.deadline = deadline
        self.attempt_timeout = attempt_timeout
        self._i = random.randrange(len(endpoints)) if start is None else start % len(endpoints)
        self._lock = threading.Lock()
        self._channels = {ep: grpc.insecure_channel(ep, CHANNEL_OPTIONS) for ep in endpoints}
        self._calls: dict[tuple[str, str], object] = {}

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()

    def __enter__(self) -> EtcdKV:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _method(self, endpoint: str, name: str, request: str, response: str):
        key = (endpoint, name)
        call = self._calls.get(key)
        if call is None:
            call = self._calls[key] = self._channels[endpoint].unary_unary(
                f"/{PACKAGE}.KV/{name}", request_serializer=M[request].SerializeToString,
                response_deserializer=M[response].FromString)
        return call

    def _call(self, name: str, request, response: str, deadline: float | None = None):
        stop_at = time.monotonic() + (deadline or self.deadline)
        last = "no attempt made"
        while True:
            with self._lock:
                endpoint = self.endpoints[self._i]
            remaining = stop_at - time.monotonic()
            try:
                return self._method(endpoint, name, type(request).__name__, response)(
                    request, timeout=max(0.05, min(self.attempt_timeout, remaining)))
            except grpc.RpcError as err:
                if err.code() not in RETRYABLE:
                    raise
                last = f"{endpoint}: {err.details() or err.code().name}"
                with self._lock:
                    if self.endpoints[self._i] == endpoint:
                        self._i = (self._i + 1) % len(self.endpoints)
            if time.monotonic() >= stop_at:
                raise EtcdUnavailable(f"no etcd member answered within "
                                      f"{deadline or self.deadline:.1f}s (last: {last})")
            time.sleep(0.01)

    def put(self, key: bytes, value: bytes, deadline: float | None = None) -> int:
        """Write a key (a linearizable, committed write); returns the store's revision."""
        return self._call("Put", M["PutRequest"](key=key, value=value), "PutResponse",
                          deadline).header.revision

    def get(self, key: bytes) -> bytes | None:
        """A linearizable read of one key (serializable=false: confirmed with the leader)."""
        kvs = self._call("Range", M["RangeRequest"](key=key), "RangeResponse").kvs
        return kvs[0].value if kvs else None

    def list(self, prefix: bytes, limit: int = 0) -> list[tuple[bytes, bytes]]:
        """A linearizable range read of every key under `prefix`, sorted by key."""
        resp = self._call("Range", M["RangeRequest"](key=prefix, range_end=prefix_end(prefix),
                                                     limit=limit), "RangeResponse")
        return [(kv.key, kv.value) for kv in resp.kvs]

    def rename(self, src: bytes, dst: bytes, value: bytes) -> bool:
        """One transaction: if `src` exists, put `dst` (with `value`) and delete `src`."""
        req = M["TxnRequest"](
            compare=[M["Compare"](result=GREATER, target=VERSION, key=src, version=0)],
            success=[M["RequestOp"](request_put=M["PutRequest"](key=dst, value=value)),
                     M["RequestOp"](request_delete_range=M["DeleteRangeRequest"](key=src))])
        return self._call("Txn", req, "TxnResponse").succeeded
