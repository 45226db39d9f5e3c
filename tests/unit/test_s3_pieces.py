"""The S3 API's pure pieces: key mapping, ranges and conditions, XML limits, the aws-chunked
decoder over in-memory bodies (the end-to-end tests are tests/integration/test_s3.py)."""
from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.s3 import conditions, naming, xmldoc
from gateway.s3.chunked import ChunkedDecoder
from gateway.s3.errors import S3Error


@pytest.mark.parametrize("name,ok", [("photos", True), ("a.b-c", True), ("ab", False),
                                     ("Photos", False), ("a..b", False), ("-ab", False),
                                     ("192.168.1.1", False), ("a" * 64, False), ("a-.b", False)])
def test_bucket_names(name, ok):
    assert naming.valid_bucket(name) is ok


def test_keys_map_to_paths_or_are_refused():
    assert naming.object_path("alice", "b", "x/y z/é") == ("/alice/b/x/y z/é", False)
    assert naming.object_path("alice", "b", "dir/") == ("/alice/b/dir", True)
    for key in ("a//b", "/a", "a/./b", "a/../b", "a\0b", "x" * 256, "", "/"):
        with pytest.raises(S3Error) as err:
            naming.object_path("alice", "b", key)
        assert err.value.code in ("InvalidArgument", "KeyTooLongError")
    with pytest.raises(S3Error) as err:
        naming.object_path("alice", "b", "a/" * 600)
    assert err.value.code == "KeyTooLongError"


def test_ranges():
    assert conditions.byte_range("bytes=0-9", 100) == (0, 9)
    assert conditions.byte_range("bytes=90-", 100) == (90, 99)
    assert conditions.byte_range("bytes=-5", 100) == (95, 99)
    assert conditions.byte_range("bytes=95-200", 100) == (95, 99)
    assert conditions.byte_range("bytes=0-1,5-6", 100) is None
    assert conditions.byte_range("items=0-1", 100) is None
    for bad in ("bytes=100-", "bytes=-0"):
        with pytest.raises(S3Error) as err:
            conditions.byte_range(bad, 100)
        assert err.value.status == 416


def test_conditions():
    headers = {}
    get = headers.get
    assert conditions.evaluate(get, '"abc"', 1_000_000) == 0
    headers["if-none-match"] = '"abc"'
    assert conditions.evaluate(get, '"abc"', 1_000_000) == conditions.NOT_MODIFIED
    headers.clear()
    headers["if-match"] = '"other"'
    with pytest.raises(S3Error) as err:
        conditions.evaluate(get, '"abc"', 1_000_000)
    assert err.value.status == 412
    headers.clear()
    headers["x-amz-copy-source-if-none-match"] = "*"
    with pytest.raises(S3Error):
        conditions.evaluate(get, '"abc"', 1_000_000, prefix="x-amz-copy-source-")


def test_xml_documents_refuse_dtds_and_garbage():
    for body in (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><Delete/>',
                 b"<Delete><Object>", b"not xml", b"<Other/>", b"<a>" * 10 + b"x" * (1 << 20)):
        with pytest.raises(S3Error) as err:
            xmldoc.parse(body, "Delete")
        assert err.value.code == "MalformedXML"
    root = xmldoc.parse(b'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Object>'
                        b'<Key>k</Key></Object></Delete>', "Delete")
    assert [xmldoc.text_of(o, "Key") for o in xmldoc.children(root, "Object")] == ["k"]


def _tree_oracle(root: str, children, text) -> bytes:
    """The same document built with ElementTree (what xmldoc.document used to do)."""
    def fill(parent, items):
        for tag, value in items:
            if value is None:
                continue
            child = ET.SubElement(parent, tag)
            if isinstance(value, list):
                fill(child, value)
            elif isinstance(value, bool):
                child.text = "true" if value else "false"
            else:
                child.text = str(value)
    element = ET.Element(root, xmlns=xmldoc.NS)
    element.text = text
    fill(element, children)
    return ET.tostring(element, encoding="unicode").encode()


TEXTS = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=12)
VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 10**12), TEXTS),
    lambda inner: st.lists(st.tuples(st.sampled_from(["Key", "Size", "Prefix"]), inner),
                           max_size=4), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(children=st.lists(st.tuples(st.sampled_from(["Name", "Contents", "IsTruncated"]),
                                   VALUES), max_size=5),
       text=st.one_of(st.none(), TEXTS))
def test_xml_documents_say_what_elementtree_would(children, text):
    got = xmldoc.document("ListBucketResult", children, text)
    assert got.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')
    body = got.split(b"\n", 1)[1]
    assert ET.canonicalize(body.decode()) == \
        ET.canonicalize(_tree_oracle("ListBucketResult", children, text).decode())


def _decode(body: bytes, decoded_length: int, step: int = 7):
    parts = [body[i:i + step] for i in range(0, len(body), step)]

    async def read() -> bytes:
        return parts.pop(0) if parts else b""

    async def run():
        decoder = ChunkedDecoder(read, None, decoded_length)
        out = b"".join([p async for p in decoder.pieces()])
        return out, decoder.trailers
    return asyncio.run(run())


def test_unsigned_chunks_with_a_trailer():
    crc = zlib.crc32(b"hello world").to_bytes(4, "big").hex()
    body = b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32:" + crc.encode() + b"\r\n\r\n"
    assert _decode(body, 11) == (b"hello world", {"x-amz-checksum-crc32": crc})


@pytest.mark.parametrize("body,length", [
    (b"5\r\nhello\r\n0\r\n\r\n", 6),                  # decoded length lies
    (b"5\r\nhello world\r\n0\r\n\r\n", 11),           # a chunk longer than announced
    (b"5\r\nhel", 5),                                 # truncated
    (b"zz\r\nhello\r\n0\r\n\r\n", 5),                 # not a size
    (b"5\r\nhello\r\n0\r\nbroken\r\n\r\n", 5),        # a trailer without ':'
    (b"5\r\nhello\r\n0\r\n\r\nextra", 5),             # bytes after the end
])
def test_broken_chunked_bodies_are_refused(body, length):
    with pytest.raises(S3Error) as err:
        _decode(body, length)
    assert err.value.status == 400
