"""A route as configured: what it matches and where it sends. Validated here, once, so the
masters (which store routes) and the gateway (which serves them) agree on what is valid."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

from gateway.auth import check_requirement
from gateway.routing.cidr import IpFilter

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
HOST = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
PARAM = re.compile(r"^\{[A-Za-z_][A-Za-z0-9_]*\}$")
LB_POLICIES = ("round-robin", "least-conn", "hash:ip")
UPSTREAM_SCHEMES = ("http", "h2c")


@dataclass
class Route:
    name: str
    path: str = "/*"                     # segments: static, {param}, and a final * for the rest
    host: str = ""                       # "" any host, "api.example.com", "*.example.com"
    to: list[str] = field(default_factory=list)      # http://h:p (HTTP/1.1), h2c://h:p (HTTP/2),
                                                     # builtin:NAME (served by the gateway)
    lb: str = "round-robin"              # round-robin | least-conn | hash:ip | hash:header:NAME
    strip_prefix: bool = False
    timeout_s: float = 30.0              # whole response head wait per try
    retries: int = 1                     # extra tries (idempotent requests, before a response)
    require_token: str = ""              # a scope the caller's gfs token must grant ("" none)
    allow: list[str] = field(default_factory=list)
    deny: list[str] = field(default_factory=list)
    health_path: str = ""                # GET this on each upstream now and then ("" never)
    health_interval_s: float = 0.0       # between checks (0: the gateway's --health-interval)
    health_fall: int = 0                 # failed checks in a row that take an upstream out (0: 3)
    health_rise: int = 0                 # good checks in a row that bring it back (0: 2)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Route":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown route field(s): {', '.join(sorted(unknown))}")
        route = cls(**data)
        route.validate()
        return route

    def validate(self) -> None:
        """Raise ValueError with a one-line reason when the route cannot be served."""
        if not NAME.match(self.name or ""):
            raise ValueError(f"bad route name {self.name!r}: lower-case letters, digits, . _ -")
        host = self.host.lower()
        if host not in ("", "*") and not HOST.match(host):
            raise ValueError(f"route {self.name}: bad host {self.host!r}")
        self.host = "" if host == "*" else host
        path_segments(self.path)                 # raises on a bad pattern
        if not self.to:
            raise ValueError(f"route {self.name}: no upstream (--to)")
        if any(url.startswith("builtin:") for url in self.to):
            if len(self.to) != 1 or not NAME.match(self.to[0][len("builtin:"):]):
                raise ValueError(f"route {self.name}: a built-in target (builtin:NAME) must be "
                                 f"the route's only one")
            self.to = list(self.to)
        for url in [] if self.to[0].startswith("builtin:") else self.to:
            parts = urlsplit(url)
            if parts.scheme not in UPSTREAM_SCHEMES or not parts.hostname or not parts.port:
                raise ValueError(f"route {self.name}: upstream {url!r} must be http://HOST:PORT "
                                 f"or h2c://HOST:PORT")
            if parts.path not in ("", "/") or parts.query:
                raise ValueError(f"route {self.name}: upstream {url!r} has a path; use "
                                 f"--strip-prefix and route paths instead")
        if self.lb not in LB_POLICIES and not (self.lb.startswith("hash:header:")
                                               and len(self.lb) > len("hash:header:")):
            raise ValueError(f"route {self.name}: bad --lb {self.lb!r} "
                             f"(round-robin, least-conn, hash:ip, hash:header:NAME)")
        if not 0 < self.timeout_s <= 3600:
            raise ValueError(f"route {self.name}: timeout must be in (0, 3600] seconds")
        if not 0 <= self.retries <= 10:
            raise ValueError(f"route {self.name}: retries must be 0..10")
        IpFilter(self.allow, self.deny)          # raises on a bad CIDR
        if self.health_path and (not self.health_path.startswith("/") or
                                 any(c.isspace() for c in self.health_path)):
            raise ValueError(f"route {self.name}: the health path must start with / and have "
                             f"no spaces")
        if self.health_interval_s and not 0.1 <= self.health_interval_s <= 3600:
            raise ValueError(f"route {self.name}: the health interval must be 0.1s..1h")
        if not (0 <= self.health_fall <= 100 and 0 <= self.health_rise <= 100):
            raise ValueError(f"route {self.name}: health fall and rise must be 0..100")
        check_requirement(self.require_token)


def path_segments(pattern: str) -> list[str]:
    """'/v1/users/{id}' -> ['v1', 'users', '{id}']; '/files/*' -> ['files', '*']; '/' -> []."""
    if not pattern.startswith("/"):
        raise ValueError(f"path pattern {pattern!r} must start with /")
    segments = [s for s in pattern.split("/")[1:]]
    if segments and segments[-1] == "":
        segments.pop()                           # '/a/' is '/a'
    for i, seg in enumerate(segments):
        if seg == "":
            raise ValueError(f"path pattern {pattern!r} has an empty segment")
        if seg == "*":
            if i != len(segments) - 1:
                raise ValueError(f"path pattern {pattern!r}: * only as the last segment")
        elif seg.startswith("{") or seg.endswith("}"):
            if not PARAM.match(seg):
                raise ValueError(f"path pattern {pattern!r}: bad parameter {seg!r}")
        elif "*" in seg or "{" in seg or "}" in seg:
            raise ValueError(f"path pattern {pattern!r}: bad segment {seg!r}")
    return segments
