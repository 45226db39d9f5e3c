"""The route trie, path normalization, route validation and CIDR filtering (no I/O)."""
from __future__ import annotations

import pytest

from gateway.routing.cidr import IpFilter, PrefixTrie, client_address
from gateway.routing.route import Route
from gateway.routing.trie import RouteTable, normalize_path


def r(name, path="/*", host="", **kw):
    route = Route(name=name, path=path, host=host, to=kw.pop("to", ["http://127.0.0.1:1"]), **kw)
    route.validate()
    return route


def test_static_beats_param_beats_wildcard():
    table = RouteTable([r("wild", "/v1/*"), r("param", "/v1/users/{id}"),
                        r("static", "/v1/users/me"), r("list", "/v1/users")])
    assert table.lookup("x", "/v1/users/me").route.name == "static"
    m = table.lookup("x", "/v1/users/42")
    assert m.route.name == "param" and m.params == {"id": "42"}
    assert table.lookup("x", "/v1/users").route.name == "list"
    assert table.lookup("x", "/v1/users/42/photos").route.name == "wild"
    assert table.lookup("x", "/v1").route.name == "wild"       # * also matches nothing
    assert table.lookup("x", "/v2") is None


def test_backtracking_when_the_specific_branch_leads_nowhere():
    table = RouteTable([r("static", "/a/b/c"), r("param", "/a/{x}/d")])
    assert table.lookup("h", "/a/b/d").route.name == "param"
    assert table.lookup("h", "/a/b/c").route.name == "static"
    assert table.lookup("h", "/a/b/e") is None


def test_host_exact_then_longest_wildcard_then_any():
    table = RouteTable([r("any", "/*"), r("wild", "/*", "*.example.com"),
                        r("deep", "/*", "*.eu.example.com"), r("exact", "/*", "api.example.com"),
                        r("exact-only-v1", "/v1/*", "v1.example.com")])
    assert table.lookup("api.example.com", "/x").route.name == "exact"
    assert table.lookup("www.example.com", "/x").route.name == "wild"
    assert table.lookup("a.eu.example.com", "/x").route.name == "deep"
    assert table.lookup("example.com", "/x").route.name == "any"   # *.x needs a label before
    assert table.lookup("other.org", "/x").route.name == "any"
    # the exact host has no route for /v2: the next host level that has one answers
    assert table.lookup("v1.example.com", "/v2").route.name == "wild"


def test_prefix_and_rest_for_strip_prefix():
    table = RouteTable([r("api", "/api/*"), r("root", "/")])
    m = table.lookup("h", "/api/users/1/")
    assert (m.prefix, m.rest) == ("/api", "/users/1/")
    m = table.lookup("h", "/api")
    assert (m.prefix, m.rest) == ("/api", "/")
    assert table.lookup("h", "/").route.name == "root"


def test_conflicts_are_refused():
    with pytest.raises(ValueError, match="match the same"):
        RouteTable([r("a", "/u/{id}"), r("b", "/u/{name}")])
    with pytest.raises(ValueError, match="match the same"):
        RouteTable([r("a", "/u/*", "h.com"), r("b", "/u/*", "h.com")])
    RouteTable([r("a", "/u/*", "h.com"), r("b", "/u/*", "g.com")])   # other host: fine
    with pytest.raises(ValueError, match="two routes named"):
        RouteTable([r("a", "/x"), r("a", "/y")])


@pytest.mark.parametrize("raw,norm", [
    ("/a/b", "/a/b"), ("/%61dmin", "/admin"), ("/a/%2F", "/a/%2F"), ("/a/./b", "/a/b"),
    ("/a/b/../c", "/a/c"), ("/a/..", "/"), ("/..", None), ("/%zz", None), ("x", None),
    ("/a%2e%2e/b", "/a../b"), ("/%2e%2e/x", None), ("/a//b", "/a//b")])
def test_normalize_path(raw, norm):
    assert normalize_path(raw) == norm


@pytest.mark.parametrize("bad,why", [
    (dict(name="Bad Name"), "bad route name"), (dict(host="exa mple.com"), "bad host"),
    (dict(path="v1"), "must start with /"), (dict(path="/a/*/b"), "only as the last"),
    (dict(path="/{1x}"), "bad parameter"), (dict(to=["ftp://h:1"]), "must be http"),
    (dict(to=["http://h"]), "must be http"), (dict(to=["http://h:1/p"]), "has a path"),
    (dict(to=[]), "no upstream"), (dict(lb="random"), "bad --lb"),
    (dict(allow=["10.0.0.1/8"]), "bad CIDR"), (dict(retries=11), "retries"),
    (dict(allow=["10.0.0.0/8"], deny=["10.0.0.0/8"]), "both the allow and the deny"),
    (dict(health_path="health"), "health path"), (dict(require_token="nope"), "require-token"),
    (dict(health_interval_s=0.01), "health interval"), (dict(health_fall=101), "fall and rise"),
    (dict(to=["builtin:metrics", "http://h:1"]), "only one")])
def test_route_validation(bad, why):
    fields = dict(name="ok", path="/*", to=["http://127.0.0.1:80"])
    fields.update(bad)
    with pytest.raises(ValueError, match=why):
        Route.from_dict(fields)


def test_route_dict_round_trip_and_unknown_fields():
    route = Route.from_dict({"name": "a", "host": "*", "to": ["h2c://10.0.0.1:50051"],
                             "lb": "hash:header:x-user"})
    assert route.host == "" and Route.from_dict(route.to_dict()) == route
    with pytest.raises(ValueError, match="unknown route field"):
        Route.from_dict({"name": "a", "to": ["http://h:1"], "colour": "red"})


def test_prefix_trie_longest_match_v4_v6():
    trie = PrefixTrie()
    trie.insert("0.0.0.0/0", "default")
    trie.insert("10.0.0.0/8", "ten")
    trie.insert("10.1.0.0/16", "ten-one")
    trie.insert("10.1.2.3/32", "host")
    trie.insert("2001:db8::/32", "doc")
    trie.insert("2001:db8:1::/48", "doc1")
    assert trie.longest("10.1.2.3") == "host"
    assert trie.longest("10.1.2.4") == "ten-one"
    assert trie.longest("10.2.0.1") == "ten"
    assert trie.longest("192.168.1.1") == "default"
    assert trie.longest("::ffff:10.1.2.3") == "host"        # v4-mapped is the v4 address
    assert trie.longest("2001:db8:1::5") == "doc1"
    assert trie.longest("2001:db8:2::5") == "doc"
    assert trie.longest("2001:db9::1") is None
    assert trie.longest("not an ip") is None
    assert trie.get("10.1.0.0/16") == "ten-one" and trie.get("10.1.0.0/17") is None
    assert len(trie) == 6
    for _ in range(2):                           # parsed addresses are cached: same answers
        assert trie.longest("10.1.2.3") == "host" and trie.longest("bad::ip::") is None
    empty = PrefixTrie()                         # nothing configured: no parsing at all
    assert empty.longest("10.1.2.3") is None and empty.longest("not an ip") is None
    empty.insert("10.0.0.0/8", "ten")
    assert empty.longest("10.1.2.3") == "ten"


def test_ip_filter():
    f = IpFilter(allow=["10.0.0.0/8", "2001:db8::/32"], deny=["10.6.6.0/24"])
    assert f.allows("10.1.1.1") and f.allows("2001:db8::1")
    assert not f.allows("10.6.6.6")           # the longer deny wins over the allow
    assert not f.allows("192.168.0.1")        # an allow list: the rest is refused
    g = IpFilter(deny=["192.168.0.0/16"], allow=[])
    assert g.allows("10.0.0.1") and not g.allows("192.168.3.4")
    h = IpFilter(deny=["0.0.0.0/0"], allow=["10.0.0.0/8"])
    assert h.allows("10.0.0.1") and not h.allows("11.0.0.1") and not h.allows("::1")
    assert IpFilter().allows("1.2.3.4")


def test_client_address_trusts_only_configured_proxies():
    trusted = PrefixTrie()
    assert client_address("1.2.3.4", "6.6.6.6", trusted) == "1.2.3.4"   # nobody trusted
    trusted.insert("10.0.0.0/8", True)
    assert client_address("1.2.3.4", "6.6.6.6", trusted) == "1.2.3.4"   # peer not trusted
    assert client_address("10.0.0.1", "6.6.6.6, 9.9.9.9", trusted) == "9.9.9.9"
    assert client_address("10.0.0.1", "6.6.6.6, 9.9.9.9, 10.0.0.2", trusted) == "9.9.9.9"
    assert client_address("10.0.0.1", "garbage, 10.0.0.3", trusted) == "10.0.0.3"
    assert client_address("10.0.0.1", None, trusted) == "10.0.0.1"


def test_serving_table_remembers_matches_within_its_bound():
    from gateway.table import ServingTable
    serving = ServingTable.build([r("api", "/v1/{id}"), r("site", "/*", host="example.com")])
    first = serving.match("x", "/v1/7")
    assert first.route.name == "api" and first.params == {"id": "7"}
    assert serving.match("x", "/v1/7") is first                 # remembered
    assert serving.match("example.com", "/a").route.name == "site"
    assert serving.match("x", "/nowhere") is None and serving.match("x", "/nowhere") is None
    long_path = "/v1/" + "a" * ServingTable.MATCH_CACHE_KEY      # too long to keep
    assert serving.match("x", long_path).route.name == "api"
    assert ("x", long_path) not in serving._matches
    for i in range(ServingTable.MATCH_CACHE_ENTRIES + 10):      # a spray of paths: bounded
        assert serving.match("x", f"/v1/{i}").params == {"id": str(i)}
        assert len(serving._matches) <= ServingTable.MATCH_CACHE_ENTRIES
