"""The scope grammar: what a token may do.

    scope    := "*"                                  every right of the token's owner
              | service "." owner "." resource [ "@" path-glob ] ":" verbs
    verbs    := verb ("," verb)* | "*" | '["' verb '"' (', "' verb '"')* "]"
    owner    := a user name | "*"                     (whose resources)
    path-glob:= an absolute gfs path whose names may use * ? [...] and whose "**" names match any
                number of names, e.g. /alice/backups/** (storage only)

Examples: `storage.alice.files:read,list`, `storage.alice.files: ["read", "list"]`,
`storage.alice.files@/alice/backups/**:read,write`, `compute.alice.containers:create,read,delete`.
Scopes are parsed once, stored in canonical form (`format_scope`) and matched by `Scope.covers`.
"""
from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass

from gfs.errors import InvalidArgument

# (service, resource) -> the verbs it knows. compute is the roadmap's next layer: its scopes are
# accepted and stored now so tokens made today keep working when it arrives.
RESOURCES: dict[tuple[str, str], frozenset[str]] = {
    ("storage", "files"): frozenset({"read", "list", "write", "delete", "share"}),
    ("compute", "containers"): frozenset({"create", "read", "update", "delete", "exec", "logs"}),
    ("compute", "volumes"): frozenset({"create", "read", "delete"}),
}
PATH_SERVICES = frozenset({"storage"})
ALL = "*"
_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_HEAD = re.compile(r"^(?P<service>[a-z]+)\.(?P<owner>\*|[a-z_][a-z0-9_-]{0,31})\."
                   r"(?P<resource>[a-z]+)(?:@(?P<path>/[^:]*))?$")


@dataclass(frozen=True)
class Scope:
    service: str
    owner: str                 # a user name or "*"
    resource: str
    verbs: frozenset[str]
    path: str = ""             # a path glob narrowing a storage scope ("" = anywhere)

    def covers(self, service: str, owner: str, resource: str, verb: str,
               path: str | None = None) -> bool:
        """Does this scope grant `verb` on `owner`'s `service.resource` (at `path`)?"""
        if (service, resource, verb) != (self.service, self.resource, verb) or verb not in self.verbs:
            return False
        if self.owner not in (ALL, owner):
            return False
        return not self.path or (path is not None and path_matches(self.path, path))


def check_user_name(name: str, what: str = "user name") -> str:
    """Names of users and service accounts: like Unix login names."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidArgument(f"{what} {name!r} is not valid: 1-32 characters, lower-case "
                              f"letters, digits, '_', '-', starting with a letter or '_'")
    return name


def _parse_verbs(text: str, service: str, resource: str) -> frozenset[str]:
    known = RESOURCES[(service, resource)]
    text = text.strip()
    if text == ALL:
        return known
    if text.startswith("["):
        try:
            verbs = json.loads(text)
        except ValueError:
            raise InvalidArgument(f"verbs {text!r} are not a JSON list of strings") from None
        if not isinstance(verbs, list) or not all(isinstance(v, str) for v in verbs):
            raise InvalidArgument(f"verbs {text!r} are not a JSON list of strings")
    else:
        verbs = [v.strip() for v in text.split(",")]
    if not verbs or "" in verbs:
        raise InvalidArgument("a scope needs at least one verb (or '*')")
    unknown = sorted(set(verbs) - known)
    if unknown:
        raise InvalidArgument(f"{service}.{resource} has no verb {', '.join(unknown)} "
                              f"(known: {', '.join(sorted(known))})")
    return frozenset(verbs)


def parse_scope(text: str) -> Scope | None:
    """A scope from its text; None for "*" (all of the owner's rights)."""
    if not isinstance(text, str):
        raise InvalidArgument(f"a scope must be text, not {type(text).__name__}")
    text = text.strip()
    if text == ALL:
        return None
    head, sep, verbs = text.partition(":")
    match = _HEAD.match(head.strip())
    if not sep or match is None:
        raise InvalidArgument(f"scope {text!r} is not of the form service.owner.resource[@path]:verbs "
                              f"(e.g. storage.alice.files:read,list)")
    service, owner, resource, path = match.group("service", "owner", "resource", "path")
    if (service, resource) not in RESOURCES:
        known = ", ".join(f"{s}.{r}" for s, r in RESOURCES)
        raise InvalidArgument(f"scope {text!r}: unknown resource {service}.{resource} (known: {known})")
    if path is not None and service not in PATH_SERVICES:
        raise InvalidArgument(f"scope {text!r}: only storage scopes can be narrowed to a path")
    return Scope(service, owner, resource, _parse_verbs(verbs, service, resource),
                 _check_glob(path) if path else "")


def _check_glob(path: str) -> str:
    names = path[1:].split("/") if path != "/" else []
    if any(name in ("", ".", "..") for name in names):
        raise InvalidArgument(f"path {path!r} in a scope has an empty, '.' or '..' name")
    return path


def format_scope(scope: Scope | None) -> str:
    """The canonical text of a scope (verbs sorted); "*" for None."""
    if scope is None:
        return ALL
    where = f"@{scope.path}" if scope.path else ""
    verbs = ALL if scope.verbs == RESOURCES[(scope.service, scope.resource)] else ",".join(sorted(scope.verbs))
    return f"{scope.service}.{scope.owner}.{scope.resource}{where}:{verbs}"


def parse_scopes(texts: list[str]) -> list[Scope] | None:
    """A token's scope list; None when any of them is "*" (all of the owner's rights)."""
    if not texts:
        raise InvalidArgument("a token needs at least one scope ('*' for all of its owner's rights)")
    scopes = [parse_scope(t) for t in texts]
    return None if any(s is None for s in scopes) else scopes


def path_matches(pattern: str, path: str) -> bool:
    """Does gfs `path` match the glob `pattern` ("**" = any number of names, others fnmatch)?"""
    want = [] if pattern == "/" else pattern[1:].split("/")
    have = [] if path == "/" else path[1:].split("/")
    return _match(want, have)


def _match(want: list[str], have: list[str]) -> bool:
    if not want:
        return not have
    if want[0] == "**":
        return any(_match(want[1:], have[i:]) for i in range(len(have) + 1))
    return bool(have) and fnmatch.fnmatchcase(have[0], want[0]) and _match(want[1:], have[1:])
