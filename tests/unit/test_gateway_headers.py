"""gateway/headers.py: what the gateway changes in headers on the way to the upstream."""
from __future__ import annotations

from gateway.headers import TRACEPARENT, new_traceparent, upstream_request_headers


def test_new_traceparents_are_valid_and_distinct():
    seen = {new_traceparent() for _ in range(200)}
    assert len(seen) == 200
    for value in seen:
        assert TRACEPARENT.match(value), value
        version, trace_id, parent_id, flags = value.split("-")
        assert (version, flags) == ("00", "01")
        assert trace_id != "0" * 32 and parent_id != "0" * 16


def test_traceparent_is_added_when_absent_and_kept_when_valid():
    headers, trace = upstream_request_headers([("accept", "*/*")], "10.0.0.1", False, "http",
                                              "example.com", None, False)
    assert ("traceparent", trace) in headers and TRACEPARENT.match(trace)
    given = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    headers, trace = upstream_request_headers([("traceparent", given)], "10.0.0.1", False,
                                              "http", "example.com", None, False)
    assert trace == given and [v for k, v in headers if k == "traceparent"] == [given]
