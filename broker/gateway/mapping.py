"""What a request asks for: (route, kind, resource, action) and the upstream URL. Pure.

Nothing is normalised: the path is the one the client sent (still percent-encoded), and
anything outside the capability resource grammar (``..``, ``%2e``, ``%2f``, ``//``,
backslashes, upper-case hosts, ...) is refused with ``CapabilityDenied`` before a route,
a token or an upstream is looked at any further.

* ``/http/HOST[:PORT]/PATH?QUERY`` -> kind ``http``, resource ``https://HOST[:PORT]/PATH``,
  the method as the action; the route's credential parameters are dropped from the query.
* ``/git/HOST/OWNER/REPO[.git]/SERVICE`` -> kind ``git``, resource ``HOST/OWNER/REPO``;
  only smart HTTP: ``GET info/refs?service=git-upload-pack`` and ``POST git-upload-pack``
  are ``read``, ``GET info/refs?service=git-receive-pack`` and ``POST git-receive-pack``
  are ``write``. Dumb HTTP, other services, other paths and other methods are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote_plus

from broker.capability.kinds import KINDS
from broker.capability.resources import validate_resource
from broker.errors import CapabilityDenied, InvalidRequest
from broker.gateway.config import GatewayConfig, Route

_GIT_SERVICES: Final = {
    ("GET", "info/refs", "service=git-upload-pack"): "read",
    ("POST", "git-upload-pack", ""): "read",
    ("GET", "info/refs", "service=git-receive-pack"): "write",
    ("POST", "git-receive-pack", ""): "write",
}
_HTTP_ACTIONS: Final = frozenset(KINDS["http"].actions)
RECEIVE_PACK: Final = "git-receive-pack"


@dataclass(frozen=True, slots=True)
class Target:
    route: Route
    kind: str
    resource: str
    action: str
    upstream_url: str
    service: str = ""  # git: info/refs, git-upload-pack or git-receive-pack


def split_route(config: GatewayConfig, raw_path: str) -> tuple[Route, str]:
    """The route a path names (``/git/HOST/...`` or ``/http/HOST[:PORT]/...``) and the rest
    of the path after the host (starting with ``/``, or empty)."""
    kind, sep, rest = raw_path.removeprefix("/").partition("/")
    if not sep or kind not in ("git", "http"):
        raise CapabilityDenied("no such gateway path")
    host, slash, tail = rest.partition("/")
    route = config.route(kind, host)
    if route is None:
        raise CapabilityDenied(f"no {kind} route for this host")
    return route, slash + tail


def _checked(kind: str, resource: str) -> str:
    try:
        return validate_resource(kind, resource)
    except InvalidRequest as e:
        raise CapabilityDenied(f"non-canonical resource: {e.reason}") from None


def strip_query(raw_query: str, names: frozenset[str]) -> str:
    """The query without the parameters named in ``names`` (compared decoded and lower
    case, so ``API%5FKEY=`` is dropped with ``api_key``); the rest kept byte for byte."""
    if not raw_query:
        return ""
    kept = [p for p in raw_query.split("&") if unquote_plus(p.partition("=")[0]).lower() not in names]
    return "&".join(kept)


def http_target(route: Route, rest: str, raw_query: str, method: str) -> Target:
    if route.origin is None:  # an http route always has its origin
        raise CapabilityDenied("route without origin")
    if method not in _HTTP_ACTIONS:
        raise CapabilityDenied("method not allowed")
    resource = _checked("http", route.origin + (rest or "/"))
    names = set(route.strip_query)
    if route.credential.param is not None:
        names.add(route.credential.param.lower())
    query = strip_query(raw_query, frozenset(names))
    url = route.upstream + (rest or "/") + ("?" + query if query else "")
    return Target(route, "http", resource, method, url)


def git_target(route: Route, rest: str, raw_query: str, method: str) -> Target:
    parts = rest.removeprefix("/").split("/", 2)
    if len(parts) < 3:
        raise CapabilityDenied("not a git smart-HTTP path")
    owner, repo_part, service = parts
    repo = repo_part.removesuffix(".git")
    resource = _checked("git", f"{route.match}/{owner}/{repo}")
    action = _GIT_SERVICES.get((method, service, raw_query))
    if action is None:
        raise CapabilityDenied("not a git smart-HTTP request (only info/refs, git-upload-pack, git-receive-pack)")
    url = f"{route.upstream}/{owner}/{repo_part}/{service}" + ("?" + raw_query if raw_query else "")
    return Target(route, "git", resource, action, url, service)


def target_of(route: Route, rest: str, raw_query: str, method: str) -> Target:
    if "\\" in rest or "%" in rest:  # never decoded, never normalised: refused
        raise CapabilityDenied("non-canonical path")
    if route.kind == "git":
        return git_target(route, rest, raw_query, method)
    return http_target(route, rest, raw_query, method)
