"""Raw gRPC calls that bypass the client, for fuzzing every method of a service.

`service_methods` lists a service's methods from its proto descriptor (so a method added to a
.proto is fuzzed without touching the tests); `call_raw` sends request bodies as bytes through a
generic channel call, so bodies no client would build (random bytes, truncated or oversized
messages) reach the server; `hostile_messages` is a hypothesis strategy for well-formed messages
whose fields hold values no honest client sends. Every call takes `metadata=`, so the same fuzz
runs with and without credentials.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import grpc
from google.protobuf import message as proto_message
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import strategies as st

Metadata = Sequence[tuple[str, str | bytes]]

# Statuses that are the truth for a request a fuzzer can build: it is malformed or refers to
# nothing, the state does not allow it, it is too large, or the caller is not allowed.
BAD_INPUT_CODES = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.OUT_OF_RANGE,
})


@dataclass(frozen=True)
class Method:
    path: str                       # /package.Service/Name
    name: str
    request: type                   # the request message class
    client_streaming: bool
    server_streaming: bool


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    details: str


def service_methods(pb2_module, service: str) -> list[Method]:
    """Every method of `service` as declared in `pb2_module`'s proto file."""
    desc = pb2_module.DESCRIPTOR.services_by_name[service]
    out = []
    for m in desc.methods:
        out.append(Method(f"/{desc.full_name}/{m.name}", m.name,
                          message_factory.GetMessageClass(m.input_type),
                          m.client_streaming, m.server_streaming))
    return out


def call_raw(channel: grpc.Channel, method: Method, bodies: Sequence[bytes], *,
             timeout: float = 10.0, metadata: Metadata | None = None,
             max_responses: int = 1) -> Outcome:
    """Send `bodies` (one for a unary request, any number for a client stream) as they are and
    read the answer; returns its status. Bodies are bytes, never re-encoded. A response stream
    is read up to `max_responses` messages, then cancelled (some, like a watch, never end):
    that counts as OK."""
    kind = (("stream" if method.client_streaming else "unary") + "_"
            + ("stream" if method.server_streaming else "unary"))
    call = getattr(channel, kind)(method.path, request_serializer=None,
                                  response_deserializer=None)
    request = iter(list(bodies)) if method.client_streaming else bodies[0]
    try:
        answer = call(request, timeout=timeout, metadata=metadata)
        if method.server_streaming:
            for n, _ in enumerate(answer, 1):
                if n >= max_responses:
                    answer.cancel()
                    break
        return Outcome(grpc.StatusCode.OK, "")
    except grpc.RpcError as err:
        return Outcome(err.code(), err.details() or "")


# --- bodies ------------------------------------------------------------------------------------

def truncations(body: bytes) -> list[bytes]:
    """`body` cut short at a few places (every cut that ends inside a field is malformed)."""
    cuts = sorted({1, 2, len(body) // 2, len(body) - 1} - {0, len(body)})
    return [body[:n] for n in cuts if 0 < n < len(body)]


def oversized_body(size: int) -> bytes:
    """A well-formed message of any type that is over `size` bytes: one unknown
    length-delimited field (which a decoder would skip)."""
    return _varint(999 << 3 | 2) + _varint(size) + b"\0" * size


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


# --- hostile field values ----------------------------------------------------------------------

_UINT64_MAX = (1 << 64) - 1
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_UINT32_MAX = (1 << 32) - 1

_HOSTILE_TEXT = [
    "", " ", "/", "//", "/..", "/a/../b", "a/b", "/a\x00b", "\x00", "/" + "n" * 300,
    "/" + "x" * 5000, "é" * 3, "\u202e/evil", "hot", "cold", "auto", "bogus", "HOT",
    "127.0.0.1:1", "127.0.0.1:0", "127.0.0.1:99999", "127.0.0.1:-1", "127.0.0.1", ":", ":80",
    "[::1]:1", "unix:/tmp/x", "a b:1", "%s%n", "\n", "' OR 1=1 --",
]
# Plausible values, so that a message with some hostile fields gets past the checks of the others.
_PLAUSIBLE_TEXT = ["/fuzz", "/fuzz/a", "/fuzz/b/c", "/", "127.0.0.1:1", "hot", "cold", "auto",
                   "alice"]
_HOSTILE_BYTES = [b"", b"\x00", b"\xff" * 16, b"x" * 15, b"x" * 17, b"\x01" * 16]


def _ints(low: int, high: int) -> st.SearchStrategy[int]:
    edges = [low, high, 0, 1, high - 1] + ([-1] if low < 0 else [])
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def _scalar(field: FieldDescriptor) -> st.SearchStrategy:
    t = field.type
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return _ints(0, _UINT64_MAX)
    if t in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64,
             FieldDescriptor.TYPE_SFIXED64):
        return _ints(_INT64_MIN, _INT64_MAX)
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return _ints(0, _UINT32_MAX)
    if t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32,
             FieldDescriptor.TYPE_SFIXED32, FieldDescriptor.TYPE_ENUM):
        return _ints(-(1 << 31), (1 << 31) - 1)
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.sampled_from([0.0, -1.0, 1e308, -1e308, math.inf, -math.inf, math.nan, 0.5])
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_STRING:
        return st.one_of(st.sampled_from(_HOSTILE_TEXT), st.sampled_from(_PLAUSIBLE_TEXT),
                         st.text(max_size=40))
    if t == FieldDescriptor.TYPE_BYTES:
        return st.one_of(st.sampled_from(_HOSTILE_BYTES), st.binary(max_size=40))
    raise TypeError(f"no strategy for field type {t}")


def _field_values(field: FieldDescriptor, depth: int, overrides: dict) -> st.SearchStrategy:
    if field.name in overrides:
        one = overrides[field.name]
    elif field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
        entry = field.message_type.fields_by_name          # a map<K, V> field: a dict
        return st.dictionaries(_scalar(entry["key"]), _field_values(entry["value"], depth, {}),
                               max_size=4)
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        one = _message_dicts(message_factory.GetMessageClass(field.message_type), depth + 1,
                             overrides)
    else:
        one = _scalar(field)
    if field.is_repeated:
        return st.lists(one, max_size=4)
    return one


def _message_dicts(cls: type, depth: int, overrides: dict) -> st.SearchStrategy:
    if depth > 2:
        return st.builds(cls)
    fields = {f.name: _field_values(f, depth, overrides) for f in cls.DESCRIPTOR.fields}
    return st.fixed_dictionaries({}, optional=fields).map(lambda kw: cls(**kw))


def hostile_messages(cls: type, overrides: dict[str, st.SearchStrategy] | None = None
                     ) -> st.SearchStrategy[proto_message.Message]:
    """Well-formed messages of `cls` whose fields (any subset) hold edge values: the largest and
    smallest integers, NaN and infinities, empty, huge, NUL-bearing or unknown strings, bad paths
    and addresses, client ids of the wrong length. `overrides` gives the values of the fields
    with those names (at any depth) instead."""
    return _message_dicts(cls, 0, overrides or {})
