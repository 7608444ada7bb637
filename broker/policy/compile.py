"""Compile parsed policy files into a ``Policy``: every field checked, every error kept.

Each file is a mapping with any of ``scopes``, ``agents`` and ``services``. Unknown keys
are errors (with a suggestion when one is close), as are names defined twice across files
and references to scopes that do not exist.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Callable, Iterable
from types import MappingProxyType
from typing import TypeVar

from broker.capability import Capability, kind_named, validate_resource
from broker.capability.names import is_audience, is_name
from broker.errors import BrokerError, PolicyIssue
from broker.policy.durations import parse_duration
from broker.policy.model import (
    GLOBAL_MAX_TTL,
    Agent,
    Identity,
    JwtIdentity,
    KeyIdentity,
    Location,
    Policy,
    Rate,
    Scope,
    Service,
    VaultIdentity,
)
from broker.policy.yamlstrict import YMap, YNode, YScalar, YSeq

T = TypeVar("T")

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_RATE = re.compile(r"([1-9][0-9]{0,6})/(s|min|h)")
_RATE_UNIT = {"s": 1, "min": 60, "h": 3600}
_LOOPBACK_HTTP = re.compile(r"http://(127\.0\.0\.1|localhost|\[::1\])(:[0-9]{1,5})?(/\S*)?")
_HTTPS = re.compile(r"https://[a-z0-9.-]+(:[0-9]{1,5})?(/\S*)?")
_MAX_TEXT = 512


class _Bad(Exception):
    """A field was wrong; the issue is already recorded."""


class _Reader:
    """Reads one file's nodes, recording issues instead of stopping at the first."""

    def __init__(self, filename: str) -> None:
        self.file = filename
        self.issues: list[PolicyIssue] = []

    def fail(self, line: int, message: str) -> _Bad:
        self.issues.append(PolicyIssue(self.file, line, message))
        return _Bad()

    def where(self, line: int) -> Location:
        return Location(self.file, line)

    def mapping(self, node: YNode, what: str) -> YMap:
        if not isinstance(node, YMap):
            raise self.fail(node.line, f"{what} must be a mapping")
        return node

    def fields(self, node: YMap, what: str, required: set[str], optional: set[str]) -> None:
        allowed = required | optional
        for key in node.names():
            if key not in allowed:
                hint = difflib.get_close_matches(key, sorted(allowed), n=1)
                suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
                self.fail(node.key_line(key), f"unknown key {key!r} in {what}{suffix}")
        for key in sorted(required - set(node.names())):
            self.fail(node.line, f"{what} is missing {key!r}")

    def scalar(self, node: YNode, what: str, check: Callable[[object], T]) -> T:
        if not isinstance(node, YScalar):
            raise self.fail(node.line, f"{what} must be a single value")
        try:
            return check(node.value)
        except (BrokerError, ValueError) as e:
            raise self.fail(node.line, f"{what}: {getattr(e, 'reason', e)}") from None

    def string_list(self, node: YNode, what: str, *, nonempty: bool = True) -> list[tuple[str, int]]:
        if not isinstance(node, YSeq):
            raise self.fail(node.line, f"{what} must be a list")
        if nonempty and not node.items:
            raise self.fail(node.line, f"{what} must not be empty")
        out: list[tuple[str, int]] = []
        seen: set[str] = set()
        for item in node.items:
            value = self.scalar(item, what, _text)
            if value in seen:
                self.fail(item.line, f"{what}: {value!r} is listed twice")
                continue
            seen.add(value)
            out.append((value, item.line))
        return out

    def optional(self, node: YMap, key: str, read: Callable[[YNode], T], default: T) -> T:
        value = node.get(key)
        if value is None:
            return default
        return read(value)

    def each(self, node: YMap, read: Callable[[str, int, YNode], T]) -> list[T]:
        """Read every entry, keeping going past bad ones."""
        out: list[T] = []
        for key, line, value in node.entries:
            try:
                out.append(read(key, line, value))
            except _Bad:
                continue
        return out


def _text(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    if any(not ch.isprintable() for ch in value):
        raise ValueError("control characters are not allowed")
    return value


def _name(value: object) -> str:
    if not is_name(value):
        raise ValueError(f"{value!r} is not a name ([a-z0-9][a-z0-9-]{{0,62}})")
    return value


def _audience(value: object) -> str:
    if not is_audience(value):
        raise ValueError(f"{value!r} is not a valid audience")
    return value


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _sha256(value: object) -> str:
    if not isinstance(value, str) or not _SHA256_HEX.fullmatch(value):
        raise ValueError("expected 64 lower-case hex digits (see 'broker keys new-client')")
    return value


def _url(value: object) -> str:
    if not isinstance(value, str) or not (_HTTPS.fullmatch(value) or _LOOPBACK_HTTP.fullmatch(value)):
        raise ValueError(f"{value!r} must be an https URL (plain http only on loopback)")
    return value


def _rate(value: object) -> Rate:
    m = _RATE.fullmatch(value) if isinstance(value, str) else None
    if not m:
        raise ValueError(f"{value!r} is not a rate like '120/min' (units s, min, h)")
    return Rate(int(m.group(1)), _RATE_UNIT[m.group(2)])


class _FileCompiler:
    def __init__(self, filename: str, global_max_ttl: int) -> None:
        self.r = _Reader(filename)
        self.global_max_ttl = global_max_ttl
        self.scopes: list[Scope] = []
        self.agents: list[tuple[Agent, list[tuple[str, int]]]] = []
        self.services: list[Service] = []

    def ttl(self, node: YNode, what: str) -> int:
        seconds = self.r.scalar(node, what, parse_duration)
        if seconds > self.global_max_ttl:
            raise self.r.fail(node.line, f"{what} {seconds}s is above the global cap {self.global_max_ttl}s")
        return seconds

    def run(self, root: YNode) -> None:
        r = self.r
        try:
            top = r.mapping(root, "a policy file")
        except _Bad:
            return
        r.fields(top, "the policy file", set(), {"scopes", "agents", "services"})
        for key, reader in (("scopes", self.scope), ("agents", self.agent), ("services", self.service)):
            node = top.get(key)
            if node is None:
                continue
            try:
                section = r.mapping(node, key)
            except _Bad:
                continue
            r.each(section, reader)

    def scope(self, name: str, line: int, node: YNode) -> None:
        r = self.r
        what = f"scope {name!r}"
        body = r.mapping(node, what)
        _check_key_name(r, name, line, "scope")
        r.fields(body, what, {"kind", "resource", "actions", "audience", "max_ttl"}, {"description", "require_pop"})
        kind_node, res_node, act_node = body.get("kind"), body.get("resource"), body.get("actions")
        aud_node, ttl_node = body.get("audience"), body.get("max_ttl")
        if kind_node is None or res_node is None or act_node is None or aud_node is None or ttl_node is None:
            raise _Bad()
        kind = r.scalar(kind_node, f"{what} kind", kind_named)
        resource = r.scalar(res_node, f"{what} resource", lambda v: validate_resource(kind.name, v))
        if kind.name == "bucket" and not resource.endswith("/"):
            raise r.fail(res_node.line, f"{what} resource: a bucket scope names a prefix ending in '/'")
        actions = r.string_list(act_node, f"{what} actions")
        unknown = [(a, ln) for a, ln in actions if a not in kind.actions]
        for action, aline in unknown:
            r.fail(aline, f"{what}: unknown action {action!r} for kind {kind.name} (one of {', '.join(kind.actions)})")
        if unknown:
            raise _Bad()
        audience = r.scalar(aud_node, f"{what} audience", _audience)
        max_ttl = self.ttl(ttl_node, f"{what} max_ttl")
        description = r.optional(body, "description", lambda n: r.scalar(n, f"{what} description", _text), "")
        require_pop = r.optional(
            body, "require_pop", lambda n: r.scalar(n, f"{what} require_pop", _bool), default=False
        )
        ordered = kind.canonical_actions({a for a, _ in actions})
        Capability(kind.name, resource, ordered, name)  # cannot fail after the checks above
        self.scopes.append(
            Scope(name, kind.name, resource, ordered, audience, max_ttl, description, require_pop, r.where(line))
        )

    def identity(self, node: YNode, what: str) -> Identity:
        r = self.r
        body = r.mapping(node, f"{what} identity")
        methods = body.names()
        if len(methods) != 1 or methods[0] not in ("key", "jwt", "vault"):
            raise r.fail(body.line, f"{what} identity must have exactly one of key, jwt, vault")
        method = methods[0]
        inner = r.mapping(body.entries[0][2], f"{what} identity {method}")
        label = f"{what} identity {method}"
        if method == "key":
            r.fields(inner, label, {"sha256"}, set())
            sha = inner.get("sha256")
            if sha is None:
                raise _Bad()
            return KeyIdentity(r.scalar(sha, f"{label} sha256", _sha256))
        if method == "jwt":
            r.fields(inner, label, {"issuer", "audience", "subject"}, {"claims", "jwks_uri"})
            iss, aud, sub = inner.get("issuer"), inner.get("audience"), inner.get("subject")
            if iss is None or aud is None or sub is None:
                raise _Bad()
            claims: list[tuple[str, str | int | bool]] = []
            claims_node = inner.get("claims")
            if claims_node is not None:
                for key, kline, value in r.mapping(claims_node, f"{label} claims").entries:
                    if key in ("iss", "aud", "sub", "exp", "nbf", "iat", "jti"):
                        r.fail(kline, f"{label} claims: {key!r} is matched by its own field or always checked")
                        continue
                    claims.append((key, r.scalar(value, f"{label} claims {key}", _claim_value)))
            return JwtIdentity(
                issuer=r.scalar(iss, f"{label} issuer", _url),
                audience=r.scalar(aud, f"{label} audience", _text),
                subject=r.scalar(sub, f"{label} subject", _text),
                claims=tuple(claims),
                jwks_uri=r.optional(inner, "jwks_uri", lambda n: r.scalar(n, f"{label} jwks_uri", _url), None),
            )
        r.fields(inner, label, set(), {"role", "entity", "metadata"})
        if not inner.entries:
            raise r.fail(inner.line, f"{label} needs at least one of role, entity, metadata")
        metadata: list[tuple[str, str]] = []
        meta_node = inner.get("metadata")
        if meta_node is not None:
            for key, _, value in r.mapping(meta_node, f"{label} metadata").entries:
                metadata.append((key, r.scalar(value, f"{label} metadata {key}", _text)))
        return VaultIdentity(
            role=r.optional(inner, "role", lambda n: r.scalar(n, f"{label} role", _text), None),
            entity=r.optional(inner, "entity", lambda n: r.scalar(n, f"{label} entity", _text), None),
            metadata=tuple(metadata),
        )

    def agent(self, name: str, line: int, node: YNode) -> None:
        r = self.r
        what = f"agent {name!r}"
        body = r.mapping(node, what)
        _check_key_name(r, name, line, "agent")
        r.fields(body, what, {"identity", "scopes"}, {"max_ttl", "rate", "description"})
        id_node, scopes_node = body.get("identity"), body.get("scopes")
        if id_node is None or scopes_node is None:
            raise _Bad()
        identity = self.identity(id_node, what)
        scopes = r.string_list(scopes_node, f"{what} scopes")
        max_ttl = r.optional(body, "max_ttl", lambda n: self.ttl(n, f"{what} max_ttl"), self.global_max_ttl)
        rate = r.optional(body, "rate", lambda n: r.scalar(n, f"{what} rate", _rate), None)
        description = r.optional(body, "description", lambda n: r.scalar(n, f"{what} description", _text), "")
        agent = Agent(name, identity, tuple(s for s, _ in scopes), max_ttl, rate, description, r.where(line))
        self.agents.append((agent, scopes))

    def service(self, name: str, line: int, node: YNode) -> None:
        r = self.r
        what = f"service {name!r}"
        body = r.mapping(node, what)
        _check_key_name(r, name, line, "service")
        r.fields(body, what, {"identity", "audiences"}, {"description"})
        id_node, aud_node = body.get("identity"), body.get("audiences")
        if id_node is None or aud_node is None:
            raise _Bad()
        identity = self.identity(id_node, what)
        audiences = r.string_list(aud_node, f"{what} audiences")
        for aud, aline in audiences:
            if not is_audience(aud):
                raise r.fail(aline, f"{what} audiences: {aud!r} is not a valid audience")
        r.optional(body, "description", lambda n: r.scalar(n, f"{what} description", _text), "")
        self.services.append(Service(name, identity, tuple(a for a, _ in audiences), r.where(line)))


def _check_key_name(r: _Reader, name: str, line: int, what: str) -> None:
    if not is_name(name):
        raise r.fail(line, f"{what} name {name!r} is not valid ([a-z0-9][a-z0-9-]{{0,62}})")


def _claim_value(value: object) -> str | int | bool:
    if isinstance(value, (str, int, bool)):
        return value
    raise ValueError("claim values are strings, integers or booleans")


def _unique(
    items: Iterable[T], name: Callable[[T], str], where: Callable[[T], Location], what: str, issues: list[PolicyIssue]
) -> dict[str, T]:
    out: dict[str, T] = {}
    for item in items:
        key = name(item)
        if key in out:
            loc = where(item)
            issues.append(PolicyIssue(loc.file, loc.line, f"{what} {key!r} is already defined at {where(out[key])}"))
            continue
        out[key] = item
    return out


def compile_policy(
    documents: list[tuple[str, YNode, bytes]], *, global_max_ttl: int = GLOBAL_MAX_TTL
) -> Policy | list[PolicyIssue]:
    """``documents`` is ``(filename, parsed root, raw bytes)`` per file, in load order."""
    if not 0 < global_max_ttl <= GLOBAL_MAX_TTL:
        raise ValueError(f"the global cap may only be lowered from {GLOBAL_MAX_TTL}s")
    issues: list[PolicyIssue] = []
    compilers: list[_FileCompiler] = []
    for filename, root, _ in documents:
        fc = _FileCompiler(filename, global_max_ttl)
        fc.run(root)
        issues.extend(fc.r.issues)
        compilers.append(fc)

    scopes = _unique((s for c in compilers for s in c.scopes), lambda s: s.name, lambda s: s.where, "scope", issues)
    agents_with_refs = [a for c in compilers for a in c.agents]
    agents = _unique((a for a, _ in agents_with_refs), lambda a: a.name, lambda a: a.where, "agent", issues)
    services = _unique(
        (s for c in compilers for s in c.services), lambda s: s.name, lambda s: s.where, "service", issues
    )
    for agent, refs in agents_with_refs:
        for scope_name, sline in refs:
            if scope_name not in scopes:
                hint = difflib.get_close_matches(scope_name, sorted(scopes), n=1)
                suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
                issues.append(
                    PolicyIssue(
                        agent.where.file, sline, f"agent {agent.name!r} refers to unknown scope {scope_name!r}{suffix}"
                    )
                )

    by_key: dict[str, Agent | Service] = {}
    principals: list[Agent | Service] = [*agents.values(), *services.values()]
    for principal in principals:
        if isinstance(principal.identity, KeyIdentity):
            other = by_key.get(principal.identity.sha256)
            if other is not None:
                issues.append(
                    PolicyIssue(
                        principal.where.file,
                        principal.where.line,
                        f"{principal.name!r} uses the same client key as {other.name!r} "
                        f"({other.where}); every principal needs its own",
                    )
                )
            by_key[principal.identity.sha256] = principal

    if issues:
        return sorted(set(issues), key=lambda i: (i.file, i.line, i.message))
    digest = hashlib.sha256()
    for filename, _, raw in documents:
        digest.update(hashlib.sha256(filename.encode()).digest())
        digest.update(hashlib.sha256(raw).digest())
    return Policy(
        scopes=MappingProxyType(scopes),
        agents=MappingProxyType(agents),
        services=MappingProxyType(services),
        digest=digest.hexdigest(),
        files=tuple(f for f, _, _ in documents),
        global_max_ttl=global_max_ttl,
        _by_key=MappingProxyType(by_key),
    )
