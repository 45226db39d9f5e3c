"""The route table: hosts (exact, then `*.suffix` longest first, then any host), each over a
trie of path segments. Lookup cost depends on the path's depth, not on the number of routes.

Order when several routes could match (documented in docs/gateway.md):
1. host: the exact host's routes, then wildcard hosts from the longest suffix down, then routes
   with no host; the first host level where some path matches wins;
2. path, segment by segment: a static segment before a {param} before a final *; when a more
   specific branch leads nowhere the lookup backs up and tries the next (depth first);
3. a final * matches the rest, also nothing ('/files/*' matches '/files').
Two routes with the same host and the same pattern shape (params named alike or not) conflict.
"""
from __future__ import annotations

from dataclasses import dataclass

from gateway.routing.route import Route, path_segments

_UNRESERVED = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def normalize_path(raw: str) -> str | None:
    """The path the table routes and the upstream receives: unreserved characters percent-
    decoded (so '/%61dmin' is '/admin' to a filter too), '.'/'..' segments resolved, empty
    segments kept. None for a path that climbs above the root or is not a path at all."""
    if not raw.startswith("/"):
        return None
    if "%" in raw:
        out, i = [], 0
        while i < len(raw):
            c = raw[i]
            if c == "%":
                hexpart = raw[i + 1:i + 3]
                if len(hexpart) != 2 or not all(h in "0123456789abcdefABCDEF" for h in hexpart):
                    return None
                ch = chr(int(hexpart, 16))
                out.append(ch if ch in _UNRESERVED else "%" + hexpart.upper())
                i += 3
                continue
            out.append(c)
            i += 1
        raw = "".join(out)
    if "/." not in raw:
        return raw
    segments: list[str] = []
    parts = raw.split("/")[1:]
    for i, seg in enumerate(parts):
        if seg == ".":
            if i == len(parts) - 1:
                segments.append("")
            continue
        if seg == "..":
            if not segments:
                return None
            segments.pop()
            if i == len(parts) - 1:
                segments.append("")
            continue
        segments.append(seg)
    return "/" + "/".join(segments)


@dataclass
class Match:
    route: Route
    params: dict[str, str]
    rest: str            # the path after the segments before a final * ('/' if nothing)
    prefix: str          # the path those segments matched (what --strip-prefix removes)


class _Node:
    __slots__ = ("static", "param", "wild", "route")

    def __init__(self):
        self.static: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.wild: Route | None = None
        self.route: Route | None = None


class RouteTable:
    def __init__(self, routes: list[Route] = ()):
        self._hosts: dict[str, _Node] = {}         # exact host -> trie
        self._suffixes: dict[str, _Node] = {}      # '.example.com' -> trie
        self._suffix_lengths: list[int] = []       # label counts present, longest first
        self._any = _Node()
        self.routes: dict[str, Route] = {}
        self._patterns: dict[str, list[str]] = {}
        for route in routes:
            self.add(route)

    def __len__(self) -> int:
        return len(self.routes)

    def add(self, route: Route) -> None:
        if route.name in self.routes:
            raise ValueError(f"two routes named {route.name}")
        if not route.host:
            root = self._any
        elif route.host.startswith("*."):
            suffix = route.host[1:]
            root = self._suffixes.setdefault(suffix, _Node())
            labels = suffix.count(".")
            if labels not in self._suffix_lengths:
                self._suffix_lengths.append(labels)
                self._suffix_lengths.sort(reverse=True)
        else:
            root = self._hosts.setdefault(route.host, _Node())
        node = root
        segments = path_segments(route.path)
        for seg in segments:
            if seg == "*":
                if node.wild is not None:
                    raise ValueError(f"routes {node.wild.name} and {route.name} match the same "
                                     f"requests ({route.host or '*'} {route.path})")
                node.wild = route
                break
            if seg.startswith("{"):
                node.param = node.param or _Node()
                node = node.param
            else:
                node = node.static.setdefault(seg, _Node())
        else:
            if node.route is not None:
                raise ValueError(f"routes {node.route.name} and {route.name} match the same "
                                 f"requests ({route.host or '*'} {route.path})")
            node.route = route
        self.routes[route.name] = route
        self._patterns[route.name] = segments

    def _roots(self, host: str):
        root = self._hosts.get(host)
        if root is not None:
            yield root
        if self._suffixes:
            labels = host.split(".")
            for n in self._suffix_lengths:
                if n < len(labels):
                    root = self._suffixes.get("." + ".".join(labels[-n:]))
                    if root is not None:
                        yield root
        yield self._any

    def lookup(self, host: str, path: str) -> Match | None:
        """`path` must be normalized (normalize_path)."""
        segments = path.split("/")[1:]
        if segments and segments[-1] == "":
            segments.pop()
        for root in self._roots(host):
            found = _walk(root, segments, 0)
            if found is not None:
                route, depth = found
                return self._match(route, path, segments, depth)
        return None

    def _match(self, route: Route, path: str, segments: list[str], depth: int) -> Match:
        params = {}
        for seg, value in zip(self._patterns[route.name], segments):
            if seg[0] == "{":
                params[seg[1:-1]] = value
        prefix = "/" + "/".join(segments[:depth]) if depth else ""
        return Match(route, params, path[len(prefix):] or "/", prefix)


def _walk(node: _Node, segments: list[str], i: int) -> tuple[Route, int] | None:
    if i == len(segments):
        if node.route is not None:
            return node.route, i
        if node.wild is not None:
            return node.wild, i
        return None
    child = node.static.get(segments[i])
    if child is not None:
        found = _walk(child, segments, i + 1)
        if found is not None:
            return found
    if node.param is not None and segments[i]:
        found = _walk(node.param, segments, i + 1)
        if found is not None:
            return found
    if node.wild is not None:
        return node.wild, i
    return None

