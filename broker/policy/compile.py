"""Compile parsed policy files into a ``Policy``: every field checked, every error kept.

Each file is a mapping with any of ``scopes``, ``agents`` and ``services``. Unknown keys
are errors (with a suggestion when one is close), as are names defined twice across files
and references to scopes that do not exist.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from collections.abc import Callable, Iterable
from types import MappingProxyType
from typing import TypeVar

from broker.capability import Budget, Capability, Kind, kind_named, validate_resource
from broker.capability.budget import MAX_BUDGET
from broker.capability.lifetime import MAX_TOKEN_TTL
from broker.capability.names import is_audience, is_name
from broker.errors import BrokerError, PolicyIssue
from broker.policy.durations import parse_duration
from broker.policy.model import (
    DEFAULT_DELEGATION_DEPTH,
    DEFAULT_SERVICE_RATE,
    MAX_DELEGATION_DEPTH,
    MAX_KV_USES,
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
from broker.policy.sizes import parse_size
from broker.policy.yamlstrict import YMap, YNode, YScalar, YSeq

T = TypeVar("T")

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_RATE = re.compile(r"([1-9][0-9]{0,6})/(s|min|h)")
_RATE_UNIT = {"s": 1, "min": 60, "h": 3600}
# no fragment, no whitespace: the URLs an identity method fetches from (issuer, jwks_uri)
_LOOPBACK_HTTP = re.compile(r"http://(127\.0\.0\.1|localhost|\[::1\])(:[0-9]{1,5})?(/[^\s#]*)?")
_HTTPS = re.compile(r"https://[a-z0-9.-]+(:[0-9]{1,5})?(/[^\s#]*)?")
_MAX_URL = 2048
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

    def fields(self, node: YMap, what: str, required: set[str], optional: set[str], *, at: int | None = None) -> None:
        allowed = required | optional
        for key in node.names():
            if key not in allowed:
                hint = difflib.get_close_matches(key, sorted(allowed), n=1)
                suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
                self.fail(node.key_line(key), f"unknown key {key!r} in {what}{suffix}")
        for key in sorted(required - set(node.names())):
            self.fail(node.line if at is None else at, f"{what} is missing {key!r}")

    def field(self, node: YMap, key: str, read: Callable[[YNode], T]) -> T | None:
        """``read`` the value under ``key``; ``None`` when absent or bad (the issue is recorded)."""
        value = node.get(key)
        if value is None:
            return None
        try:
            return read(value)
        except _Bad:
            return None

    def value(self, node: YMap, what: str, key: str, check: Callable[[object], T]) -> T | None:
        """The single value under ``key``, checked: ``None`` when absent or bad (the issue,
        labelled ``"{what} {key}"``, is recorded)."""
        return self.field(node, key, lambda n: self.scalar(n, f"{what} {key}", check))

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
    if (
        not isinstance(value, str)
        or len(value) > _MAX_URL
        or not (_HTTPS.fullmatch(value) or _LOOPBACK_HTTP.fullmatch(value))
    ):
        raise ValueError(f"{value!r:.80} must be an https URL, no fragment (plain http only on loopback)")
    return value


def _positive(value: object) -> int:
    if type(value) is not int or not 0 < value <= MAX_BUDGET:
        raise ValueError("expected a whole number from 1")
    return value


def _delegation_depth(value: object) -> int:
    if type(value) is not int or not 0 <= value <= MAX_DELEGATION_DEPTH:
        raise ValueError(f"expected an integer from 0 (no delegation) to {MAX_DELEGATION_DEPTH}")
    return value


def _uses(value: object) -> int:
    if type(value) is not int or not 1 <= value <= MAX_KV_USES:
        raise ValueError(f"{value!r} is not a number of uses from 1 to {MAX_KV_USES}")
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
        self.scope_names: set[str] = set()  # every scope defined, valid or not
        self.agents: list[Agent] = []
        self.scope_refs: list[tuple[str, list[tuple[str, int]]]] = []  # (agent, [(scope, line)])
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
        r, what = self.r, f"scope {name!r}"
        self.scope_names.add(name)  # so agents naming a broken scope are not told it is unknown
        before = len(r.issues)
        body = r.mapping(node, what)
        _check_key_name(r, name, line, "scope")
        r.fields(
            body,
            what,
            {"kind", "resource", "actions", "audience", "max_ttl"},
            {"description", "require_pop", "uses", "budget"},
            at=line,
        )
        kind = r.value(body, what, "kind", kind_named)
        resource = actions = None
        if kind is not None:
            resource = r.field(body, "resource", lambda n: self.scope_resource(n, what, kind))
            actions = r.field(body, "actions", lambda n: self.actions(n, what, kind))
        audience = r.value(body, what, "audience", _audience)
        max_ttl = r.field(body, "max_ttl", lambda n: self.ttl(n, f"{what} max_ttl"))
        description = r.value(body, what, "description", _text)
        require_pop = r.value(body, what, "require_pop", _bool)
        uses = r.value(body, what, "uses", _uses)
        if uses is not None and kind is not None and kind.name != "vault-kv":
            r.fail(body.key_line("uses"), f"{what}: uses is for vault-kv scopes only")
        budget = r.field(body, "budget", lambda n: self.budget(n, f"{what} budget"))
        if len(r.issues) > before or kind is None or resource is None or actions is None:
            return
        if audience is None or max_ttl is None:
            return
        Capability(kind.name, resource, actions, name)  # cannot fail after the checks above
        self.scopes.append(
            Scope(
                name,
                kind.name,
                resource,
                actions,
                audience,
                max_ttl,
                description or "",
                bool(require_pop),
                r.where(line),
                uses,
                budget,
            )
        )

    def budget(self, node: YNode, what: str) -> Budget:
        """``budget: {requests: N, bytes: SIZE}`` (either or both)."""
        r = self.r
        body = r.mapping(node, what)
        r.fields(body, what, set(), {"requests", "bytes"})
        requests = r.value(body, what, "requests", _positive)
        size = r.value(body, what, "bytes", parse_size)
        if requests is None and size is None:
            raise r.fail(node.line, f"{what} sets requests, bytes or both")
        return Budget(requests, size)

    def scope_resource(self, node: YNode, what: str, kind: Kind) -> str:
        resource = self.r.scalar(node, f"{what} resource", lambda v: validate_resource(kind.name, v))
        if kind.name == "bucket" and not resource.endswith("/"):
            raise self.r.fail(node.line, f"{what} resource: a bucket scope names a prefix ending in '/'")
        return resource

    def actions(self, node: YNode, what: str, kind: Kind) -> tuple[str, ...]:
        actions = self.r.string_list(node, f"{what} actions")
        unknown = [(a, ln) for a, ln in actions if a not in kind.actions]
        for action, aline in unknown:
            self.r.fail(
                aline, f"{what}: unknown action {action!r} for kind {kind.name} (one of {', '.join(kind.actions)})"
            )
        if unknown:
            raise _Bad()
        return kind.canonical_actions({a for a, _ in actions})

    def identity(self, node: YNode, what: str) -> Identity:
        r = self.r
        body = r.mapping(node, f"{what} identity")
        methods = body.names()
        if len(methods) != 1 or methods[0] not in ("key", "jwt", "vault"):
            at = body.key_line(methods[1]) if len(methods) > 1 else body.line
            raise r.fail(at, f"{what} identity must have exactly one of key, jwt, vault")
        method = methods[0]
        label = f"{what} identity {method}"
        inner = r.mapping(body.entries[0][2], label)
        before = len(r.issues)
        if method == "key":
            r.fields(inner, label, {"sha256"}, set(), at=body.line)
            sha = r.value(inner, label, "sha256", _sha256)
            if sha is None or len(r.issues) > before:
                raise _Bad()
            return KeyIdentity(sha)
        if method == "jwt":
            r.fields(inner, label, {"issuer", "audience", "subject"}, {"claims", "jwks_uri"}, at=body.line)
            issuer = r.value(inner, label, "issuer", _url)
            audience = r.value(inner, label, "audience", _text)
            subject = r.value(inner, label, "subject", _text)
            jwks_uri = r.value(inner, label, "jwks_uri", _url)
            claims = r.field(inner, "claims", lambda n: self.jwt_claims(n, label))
            if issuer is None or audience is None or subject is None or len(r.issues) > before:
                raise _Bad()
            return JwtIdentity(issuer, audience, subject, claims or (), jwks_uri)
        r.fields(inner, label, set(), {"role", "entity", "metadata"})
        if not inner.entries:
            raise r.fail(inner.line, f"{label} needs at least one of role, entity, metadata")
        role = r.value(inner, label, "role", _text)
        entity = r.value(inner, label, "entity", _text)
        metadata = r.field(inner, "metadata", lambda n: self.string_map(n, f"{label} metadata"))
        if len(r.issues) > before:
            raise _Bad()
        if role is None and entity is None and not metadata:
            raise r.fail(inner.line, f"{label} must constrain something: a role, an entity or metadata")
        return VaultIdentity(role, entity, metadata or ())

    def jwt_claims(self, node: YNode, label: str) -> tuple[tuple[str, str | int | bool], ...]:
        r = self.r
        claims: list[tuple[str, str | int | bool]] = []
        for key, kline, value in r.mapping(node, f"{label} claims").entries:
            if key in ("iss", "aud", "sub", "exp", "nbf", "iat", "jti"):
                r.fail(kline, f"{label} claims: {key!r} is matched by its own field or always checked")
                continue
            try:
                claims.append((key, r.scalar(value, f"{label} claims {key}", _claim_value)))
            except _Bad:
                continue
        return tuple(claims)

    def string_map(self, node: YNode, label: str) -> tuple[tuple[str, str], ...]:
        r = self.r
        return tuple(
            (key, r.scalar(value, f"{label} {key}", _text)) for key, _, value in r.mapping(node, label).entries
        )

    def agent(self, name: str, line: int, node: YNode) -> None:
        r, what = self.r, f"agent {name!r}"
        before = len(r.issues)
        body = r.mapping(node, what)
        _check_key_name(r, name, line, "agent")
        r.fields(
            body, what, {"identity", "scopes"}, {"max_ttl", "rate", "description", "max_delegation_depth"}, at=line
        )
        identity = r.field(body, "identity", lambda n: self.identity(n, what))
        scopes = r.field(body, "scopes", lambda n: r.string_list(n, f"{what} scopes"))
        max_ttl = r.field(body, "max_ttl", lambda n: self.ttl(n, f"{what} max_ttl"))
        depth = r.value(body, what, "max_delegation_depth", _delegation_depth)
        rate = r.value(body, what, "rate", _rate)
        description = r.value(body, what, "description", _text)
        if scopes is not None:
            self.scope_refs.append((name, scopes))
        if len(r.issues) > before or identity is None or scopes is None:
            return
        agent = Agent(
            name,
            identity,
            tuple(s for s, _ in scopes),
            max_ttl or self.global_max_ttl,
            rate,
            description or "",
            r.where(line),
            DEFAULT_DELEGATION_DEPTH if depth is None else depth,
        )
        self.agents.append(agent)

    def service(self, name: str, line: int, node: YNode) -> None:
        r, what = self.r, f"service {name!r}"
        before = len(r.issues)
        body = r.mapping(node, what)
        _check_key_name(r, name, line, "service")
        r.fields(body, what, {"identity", "audiences"}, {"description", "rate"}, at=line)
        identity = r.field(body, "identity", lambda n: self.identity(n, what))
        audiences = r.field(body, "audiences", lambda n: r.string_list(n, f"{what} audiences"))
        for aud, aline in audiences or []:
            if not is_audience(aud):
                r.fail(aline, f"{what} audiences: {aud!r} is not a valid audience")
        r.value(body, what, "description", _text)
        rate = r.value(body, what, "rate", _rate)
        if len(r.issues) > before or identity is None or audiences is None:
            return
        audience_names = tuple(a for a, _ in audiences)
        self.services.append(Service(name, identity, audience_names, r.where(line), rate or DEFAULT_SERVICE_RATE))


def _check_key_name(r: _Reader, name: str, line: int, what: str) -> None:
    if not is_name(name):
        r.fail(line, f"{what} name {name!r} is not valid ([a-z0-9][a-z0-9-]{{0,62}})")


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
    documents: list[tuple[str, YNode, bytes]], *, global_max_ttl: int = MAX_TOKEN_TTL
) -> Policy | list[PolicyIssue]:
    """``documents`` is ``(filename, parsed root, raw bytes)`` per file, in load order."""
    if not 0 < global_max_ttl <= MAX_TOKEN_TTL:
        raise ValueError(f"the global cap may only be lowered from {MAX_TOKEN_TTL}s")
    issues: list[PolicyIssue] = []
    compilers: list[_FileCompiler] = []
    for filename, root, _ in documents:
        fc = _FileCompiler(filename, global_max_ttl)
        fc.run(root)
        issues.extend(fc.r.issues)
        compilers.append(fc)

    scopes = _unique((s for c in compilers for s in c.scopes), lambda s: s.name, lambda s: s.where, "scope", issues)
    agents = _unique((a for c in compilers for a in c.agents), lambda a: a.name, lambda a: a.where, "agent", issues)
    services = _unique(
        (s for c in compilers for s in c.services), lambda s: s.name, lambda s: s.where, "service", issues
    )
    defined = {name for c in compilers for name in c.scope_names}
    for c in compilers:
        for agent_name, refs in c.scope_refs:
            for scope_name, sline in refs:
                if scope_name not in defined:
                    hint = difflib.get_close_matches(scope_name, sorted(defined), n=1)
                    suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
                    issues.append(
                        PolicyIssue(
                            c.r.file, sline, f"agent {agent_name!r} refers to unknown scope {scope_name!r}{suffix}"
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
        digest.update(hashlib.sha256(os.fsencode(filename)).digest())
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
