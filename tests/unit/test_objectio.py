"""gateway/objectio.py alone: Range parsing (RFC 9110), the error -> status map, and the body
stream (its Content-Length check, exact reads over pieces of any size, the absorb/finish hooks),
over a minimal exchange that hands out pieces."""
from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import objectio
from gateway.objectio import MalformedRange, UnsatisfiableRange, parse_range, range_span
from gateway.s3 import conditions
from gateway.s3.errors import S3Error
from gfs.errors import InvalidArgument, NotFound, ResourceExhausted


@pytest.mark.parametrize("header, size, expected", [
    (None, 10, None), ("items=0-1", 10, None), ("bytes=0-0", 10, (0, 1)),
    ("bytes=2-5", 10, (2, 6)), ("bytes=2-", 10, (2, 10)), ("bytes=2-100", 10, (2, 10)),
    ("bytes=-3", 10, (7, 10)), ("bytes=-30", 10, (0, 10)), ("Bytes = 9-9", 10, (9, 10)),
])
def test_ranges(header, size, expected):
    assert parse_range(header, size) == expected


@pytest.mark.parametrize("header", ["bytes=", "bytes=-", "bytes=a-b", "bytes=5-2", "bytes=1-2,4-5",
                                    "bytes=--1", "bytes=1", "bytes= 1 - 2"])
def test_malformed_ranges(header):
    with pytest.raises(MalformedRange):
        parse_range(header, 10)


@pytest.mark.parametrize("header, size", [("bytes=10-", 10), ("bytes=10-20", 10), ("bytes=-0", 10),
                                          ("bytes=0-", 0), ("bytes=-5", 0)])
def test_unsatisfiable_ranges(header, size):
    with pytest.raises(UnsatisfiableRange):
        parse_range(header, size)


@given(st.text(max_size=40), st.integers(0, 1 << 40))
def test_any_header_parses_to_a_range_inside_the_file_or_a_clear_error(header, size):
    try:
        got = parse_range(header, size)
    except (MalformedRange, UnsatisfiableRange) as err:
        assert str(err)
        return
    assert got is None or 0 <= got[0] < got[1] <= size


@pytest.mark.parametrize("header, span", [
    (None, None), ("bytes=0-0", (0, 1)), ("bytes=2-5", (2, 4)), ("bytes=2-", (2, -1)),
    ("bytes=-3", None), ("bytes=5-2", None), ("bytes=1-2,4-5", None), ("items=0-1", None),
    ("Bytes=1-2", None), ("bytes= 7-9 ", (7, 3)),
])
def test_the_span_to_stat_for_a_range(header, span):
    assert range_span(header) == span


RANGE_LIKE = st.one_of(st.text(max_size=30), st.from_regex(
    r"(bytes|Bytes|items)\s?=\s?\d{0,4}-\d{0,4}(,\d-\d)?\s?", fullmatch=True))


@given(RANGE_LIKE, st.integers(0, 20_000))
def test_the_stat_span_covers_whatever_range_rest_or_s3_then_serve(header, size):
    """The chunks a GET stats for (range_span, before the size is known) must hold every byte
    the REST or S3 range parser then picks once it is (a span too small would be refused)."""
    span = range_span(header)
    covered = (0, size) if span is None else (
        min(span[0], size), size if span[1] == -1 else min(size, span[0] + span[1]))
    try:
        rest = parse_range(header, size)
    except (MalformedRange, UnsatisfiableRange):
        rest = None
    try:
        s3 = conditions.byte_range(header, size)
    except S3Error:
        s3 = None
    for first, end in filter(None, (rest, s3 and (s3[0], s3[1] + 1))):
        assert covered[0] <= first <= end <= covered[1], (header, size, span)


def test_http_status():
    assert objectio.http_status(NotFound("x")) == 404
    assert objectio.http_status(InvalidArgument("x")) == 400
    assert objectio.http_status(ResourceExhausted("x")) == 507


class _Pieces:
    """What objectio reads of an exchange: `read()`, piece by piece."""

    def __init__(self, pieces: list[bytes]):
        self._pieces = list(pieces)

    async def read(self) -> bytes:
        return self._pieces.pop(0) if self._pieces else b""


def _upload_stream(pieces, expected):
    return objectio.BodySource(objectio._checked_length(objectio.body_pieces(_Pieces(pieces)),
                                                        expected), asyncio.get_running_loop())


@pytest.mark.parametrize("pieces, expected, error", [
    ([b"abc", b"de"], 5, None), ([b"abc"], 5, "ended after 3 of 5"),
    ([b"abc", b"def"], 5, "longer than its Content-Length"), ([b"x" * 10], None, None)])
def test_the_body_stream_checks_its_length(pieces, expected, error):
    async def run():
        stream = _upload_stream(pieces, expected)
        return await asyncio.get_running_loop().run_in_executor(None, stream.read)
    if error is None:
        assert asyncio.run(run()) == b"".join(pieces)
    else:
        with pytest.raises(InvalidArgument, match=error):
            asyncio.run(run())


@given(st.lists(st.binary(min_size=1, max_size=40), max_size=8),
       st.lists(st.integers(0, 50), min_size=1, max_size=12))
def test_the_body_stream_hands_out_exact_sizes_in_order(pieces, sizes):
    """read(n) / read_pieces(n) give n bytes until the end, in order, whatever the pieces'
    sizes; absorb sees every piece once in order and finish runs once, at the end."""
    seen, finished = [], []

    data = b"".join(pieces)

    def take(stream):
        out = []
        for i, n in enumerate(sizes * 4):
            got = stream.read(n) if i % 2 else b"".join(stream.read_pieces(n))
            assert len(got) == n or len(b"".join(out) + got) == len(data)
            out.append(got)
        out.append(stream.read())
        return b"".join(out)

    async def run():
        stream = objectio.BodySource(objectio.body_pieces(_Pieces(pieces)),
                                     asyncio.get_running_loop(), absorb=seen.append,
                                     finish=lambda: finished.append(1))
        return await asyncio.get_running_loop().run_in_executor(None, take, stream)
    assert asyncio.run(run()) == data
    assert b"".join(seen) == data and finished == [1]


def test_a_failing_finish_stops_the_stream_before_its_last_bytes():
    def bad_digest():
        raise ValueError("digest mismatch")

    async def run():
        stream = objectio.BodySource(objectio.body_pieces(_Pieces([b"abc", b"def"])),
                                     asyncio.get_running_loop(), finish=bad_digest)
        return await asyncio.get_running_loop().run_in_executor(None, stream.read, 100)
    with pytest.raises(ValueError, match="digest mismatch"):
        asyncio.run(run())
