"""gateway/metrics.py: the per-request counts and durations come out of /metrics as the
Prometheus counter and histogram they stand for (cumulative buckets, +Inf, sum, count)."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import BUCKETS, GatewayMetrics


def samples(metrics: GatewayMetrics) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_request_counts_and_histogram():
    metrics = GatewayMetrics()
    for seconds in (0.0001, 0.0005, 0.003, 0.003, 2.0, 99.0):        # 0.0005 is on a bound
        metrics.requests.observe("web", "200", seconds)
    metrics.requests.observe("web", "404", 0.001)
    metrics.requests.observe("-", "499", 0.2)
    got = samples(metrics)
    assert got[("gfs_gateway_requests_total", (("route", "web"), ("status", "200")))] == 6
    assert got[("gfs_gateway_requests_total", (("route", "web"), ("status", "404")))] == 1
    assert got[("gfs_gateway_requests_total", (("route", "-"), ("status", "499")))] == 1
    assert metrics.requests.count("web", "200") == 6 and metrics.requests.count("x", "1") == 0

    def bucket(le: str) -> float:
        return got[("gfs_gateway_request_seconds_bucket", (("le", le), ("route", "web")))]
    assert bucket("0.0005") == 2 and bucket("0.001") == 3 and bucket("0.005") == 5
    assert bucket("2.5") == 6 and bucket("30.0") == 6 and bucket("+Inf") == 7
    assert len([k for k in got if k[0] == "gfs_gateway_request_seconds_bucket"
                and ("route", "web") in k[1]]) == len(BUCKETS) + 1
    assert got[("gfs_gateway_request_seconds_count", (("route", "web"),))] == 7
    assert abs(got[("gfs_gateway_request_seconds_sum", (("route", "web"),))] - 101.0076) < 1e-9
