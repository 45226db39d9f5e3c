"""bench/httpload.py reads wrk's and h2load's output as they print it (samples from the Debian
versions the benchmark installs: wrk 4.1.0, nghttp2-client 1.52)."""
from __future__ import annotations

import math

import pytest

from bench.httpload import parse_h2load, parse_wrk

WRK = """Running 1s test @ http://127.0.0.1:20952/small
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    11.30ms   10.18ms  54.58ms   77.22%
    Req/Sec   351.60    107.04   509.00     60.00%
  Latency Distribution
     50%    8.89ms
     75%   14.79ms
     90%   25.29ms
     99%   43.03ms
  369 requests in 1.06s, 135.13KB read
Requests/sec:    347.35
Transfer/sec:    127.20KB
"""

WRK_ERRORS = """Running 2s test @ http://127.0.0.1:1/small
  1 threads and 32 connections
  Latency Distribution
     50%  812.00us
     75%    1.20ms
     90%    2.00ms
     99%    1.50s
  1200 requests in 2.00s, 1.00MB read
  Socket errors: connect 3, read 2, write 0, timeout 7
  Non-2xx or 3xx responses: 5
Requests/sec:    600.00
Transfer/sec:    500.00KB
"""

H2LOAD = """finished in 79.89ms, 250.36 req/s, 63.05KB/s
requests: 20 total, 20 started, 20 done, 18 succeeded, 2 failed, 0 errored, 0 timeout
status codes: 18 2xx, 0 3xx, 1 4xx, 1 5xx
traffic: 5.04KB (5158) total, 2.09KB (2140) headers (space savings 39.55%), 2.50KB (2560) data
"""


def test_wrk_figures():
    got = parse_wrk(WRK)
    assert got.rps == 347.35 and got.requests == 369 and got.errors == 0
    assert got.p99_ms == pytest.approx(43.03) and got.seconds == pytest.approx(1.06)


def test_wrk_errors_and_latency_units():
    got = parse_wrk(WRK_ERRORS)
    assert got.errors == 3 + 2 + 7 + 5
    assert got.p99_ms == pytest.approx(1500.0)


def test_h2load_figures_and_p99_from_its_log():
    log = [f"1796185963356987\t200\t{us}" for us in range(1000, 101000, 1000)]   # 1..100 ms
    got = parse_h2load(H2LOAD, log)
    assert got.rps == 250.36 and got.requests == 20
    assert got.errors == 2                    # the 4xx and the 5xx answer: h2load's "failed"
    assert got.p99_ms == pytest.approx(99.0) and got.seconds == pytest.approx(0.07989)
    assert math.isnan(parse_h2load(H2LOAD, []).p99_ms)


def test_unreadable_output_is_an_error():
    with pytest.raises(RuntimeError, match="unreadable wrk output"):
        parse_wrk("wrk: connection refused\n")
    with pytest.raises(RuntimeError, match="unreadable h2load output"):
        parse_h2load("", [])
