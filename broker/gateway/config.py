"""``gateway.yaml``: the gateway's settings (docs/gateway.md), strict YAML, every setting also from
``GATEWAY_<NAME>`` (the environment wins; ``GATEWAY_ROUTES`` holds the routes as JSON).

Pure: it reads text and a mapping of environment variables, and returns a checked
``GatewayConfig`` or raises ``ConfigError`` naming the file, the line and the field.
Nothing here reads a secret: credentials are *where* a secret lives (a file, a Vault KV
v2 path), read later by ``broker.gateway.secrets``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from broker.capability.names import is_audience
from broker.capability.resources import validate_resource
from broker.errors import InvalidRequest, PolicyIssue
from broker.policy.yamlstrict import YMap, YNode, YScalar, YSeq, parse_yaml
from broker.vault_addrs import VaultAddrError, parse_vault_addrs
from broker.verify.redis_keys import URL_SCHEMES, default_prefix

KINDS: Final = ("git", "http", "bucket")
CONTAINMENTS: Final = ("revoke-task", "deny")
PRESENTATIONS: Final = ("basic", "bearer", "header", "query")
_URL_FIELDS: Final = ("issuer", "jwks_url", "public_url", "vault_addr")
_TOP: Final = {
    "issuer": str,
    "jwks_url": str,
    "service_key_file": str,
    "revocation": str,
    "redis_url": str,
    "redis_prefix": str,
    "vault_addr": str,
    "vault_token_file": str,
    "host": str,
    "port": int,
    "public_url": str,
    "containment": str,
    "upstream_timeout": float,
    "secret_refresh": float,
    "workers": int,
    "routes": list,
}
_TOKEN_HEADER = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")
_PARAM = re.compile(r"[A-Za-z0-9._~-]{1,64}")
_PUSH_REFS = re.compile(r"refs/[A-Za-z0-9._/{}-]*/")
_PLACEHOLDERS = re.compile(r"\{(task|agent)\}")
_REGION = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")
#: the fields of a bucket credential (a KV v2 secret or a JSON file) and their default names
S3_FIELDS: Final = ("access_key_id", "secret_access_key", "session_token")
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)?")
_UNIT: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class ConfigError(ValueError):
    """The settings are wrong; the message says where and what."""


@dataclass(frozen=True, slots=True)
class Credential:
    """Where the upstream secret lives and how it is presented upstream.

    Exactly one of ``file`` (the file holds the secret) or ``vault`` (a KV v2 path such as
    ``secret/data/gateway/github``, with ``field``). A bucket route's credential
    (``present`` is ``sigv4``) has no ``field``: it names the secret's fields holding the
    access key id, the secret access key and, optionally, a session token (in a file:
    a JSON object with those fields)."""

    file: str | None
    vault: str | None
    field: str | None
    present: str  # basic | bearer | header | query
    username: str | None = None
    header: str | None = None
    param: str | None = None
    access_key_id: str | None = None  # sigv4: field names in the KV secret or JSON file
    secret_access_key: str | None = None
    session_token: str | None = None

    @property
    def source(self) -> str:
        """A name for the secret's location, safe to log (never the secret)."""
        if self.file is not None:
            return f"file:{self.file}"
        return f"vault:{self.vault}#{self.field or self.access_key_id}"


@dataclass(frozen=True, slots=True)
class Route:
    kind: str  # git | http | bucket
    audience: str
    match: str  # git: the capability host; http: HOST[:PORT] of the origin; bucket: the bucket
    origin: str | None  # http: https://HOST[:PORT], the capability resources' prefix
    upstream: str  # base URL, without a trailing slash
    credential: Credential
    push_refs: str | None = None  # git: writes only under this prefix ({agent} and {task} substituted)
    strip_headers: tuple[str, ...] = ()  # lower case
    strip_query: tuple[str, ...] = ()
    region: str | None = None  # bucket: the SigV4 signing region

    @property
    def bucket(self) -> str | None:
        """bucket: the one bucket served (capability resources ``s3://BUCKET/...``)."""
        return self.match if self.kind == "bucket" else None


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    issuer: str
    jwks_url: str
    service_key_file: str | None
    revocation: str  # a redis URL or "introspection"
    redis_url: str | None
    redis_prefix: str
    vault_addr: str | None
    vault_token_file: str | None
    host: str
    port: int
    public_url: str | None
    containment: str
    upstream_timeout: float
    secret_refresh: float
    routes: tuple[Route, ...]
    workers: int = 1

    @property
    def audiences(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.audience for r in self.routes))

    def route(self, kind: str, match: str) -> Route | None:
        for r in self.routes:
            if r.kind == kind and r.match == match:
                return r
        return None


def seconds(value: object, name: str) -> float:
    """``800ms``, ``2s``, ``5m``, ``1h`` or a whole number of seconds; > 0."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = float(value)
    else:
        m = _DURATION.fullmatch(str(value)) if isinstance(value, str) else None
        if m is None:
            raise ConfigError(f"{name} must be a duration such as 800ms, 2s or 5m")
        number = float(m.group(1)) * _UNIT[m.group(2)]
    if not 0 < number <= 86400:
        raise ConfigError(f"{name} must be more than 0 and at most a day")
    return number


# ------------------------------------------------------------------ plain values


def _plain(node: YNode) -> object:
    if isinstance(node, YScalar):
        return node.value
    if isinstance(node, YSeq):
        return [_plain(item) for item in node.items]
    return {k: _plain(v) for k, _, v in node.entries}


def _lines(node: YNode) -> dict[str, int]:
    return {k: line for k, line, _ in node.entries} if isinstance(node, YMap) else {}


def _parse(text: str | bytes, where: str) -> YNode:
    parsed = parse_yaml(text, where)
    if isinstance(parsed, PolicyIssue):
        raise ConfigError(str(parsed))
    return parsed


def _str(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} must be a non-empty string")
    return value


def _opt_str(value: object, name: str) -> str | None:
    return None if value is None else _str(value, name)


def _url(value: object, name: str) -> str:
    text = _str(value, name)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(f"{name} must be an http(s) URL without query or fragment")
    return text.rstrip("/")


def _vault_addrs(value: object, name: str) -> str:
    """One Vault address, or every node of an HA cluster, comma-separated (``broker.vault_addrs``)."""
    text = _str(value, name)
    try:
        return ",".join(parse_vault_addrs(text))
    except VaultAddrError as e:
        raise ConfigError(f"{name}: {str(e).removeprefix('vault_addr: ')}") from None


def _names(value: object, name: str, pattern: re.Pattern[str]) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and pattern.fullmatch(v) for v in value):
        raise ConfigError(f"{name} must be a list of names")
    return tuple(v.lower() for v in value)


def _only(entry: Mapping[str, object], allowed: set[str], name: str) -> None:
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ConfigError(f"{name}: unknown field(s) {unknown}")


# ------------------------------------------------------------------ credentials


def _credential(value: object, kind: str, name: str) -> Credential:
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a mapping such as {{vault: PATH, field: F, as: bearer}}")
    _only(value, {"file", "vault", "field", "as", "username", "header", "param"}, name)
    file, vault = _opt_str(value.get("file"), f"{name}.file"), _opt_str(value.get("vault"), f"{name}.vault")
    if (file is None) == (vault is None):
        raise ConfigError(f"{name}: give exactly one of file or vault")
    field = _opt_str(value.get("field"), f"{name}.field")
    if vault is not None:
        if field is None:
            raise ConfigError(f"{name}: a vault credential names its field")
        if "/data/" not in vault or vault.startswith("/"):
            raise ConfigError(f"{name}.vault must be a KV v2 path MOUNT/data/PATH")
    elif field is not None:
        raise ConfigError(f"{name}: field goes with vault, not file")
    present = value.get("as")
    allowed = PRESENTATIONS if kind == "http" else ("basic", "bearer", "header")
    if present not in allowed:
        raise ConfigError(f"{name}.as must be one of {', '.join(allowed)}")
    username = _opt_str(value.get("username"), f"{name}.username")
    header = _opt_str(value.get("header"), f"{name}.header")
    param = _opt_str(value.get("param"), f"{name}.param")
    needs = {"basic": "username", "header": "header", "query": "param"}.get(str(present))
    given = {k for k, v in (("username", username), ("header", header), ("param", param)) if v is not None}
    if given != ({needs} if needs else set()):
        raise ConfigError(f"{name}: as: {present} takes {needs or 'no other field'}")
    if header is not None and not _TOKEN_HEADER.fullmatch(header):
        raise ConfigError(f"{name}.header is not a header name")
    if param is not None and not _PARAM.fullmatch(param):
        raise ConfigError(f"{name}.param is not a plain query parameter name")
    if username is not None and ":" in username:
        raise ConfigError(f"{name}.username must not hold ':'")
    return Credential(file, vault, field, str(present), username, header, param)


def _s3_credential(value: object, name: str) -> Credential:
    """``{vault: PATH, access_key_id: F, secret_access_key: F, session_token: F}`` or
    ``{file: PATH}`` (a JSON object; the field names may be given too)."""
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a mapping such as {{vault: PATH, access_key_id: F, secret_access_key: F}}")
    _only(value, {"file", "vault", *S3_FIELDS}, name)
    file, vault = _opt_str(value.get("file"), f"{name}.file"), _opt_str(value.get("vault"), f"{name}.vault")
    if (file is None) == (vault is None):
        raise ConfigError(f"{name}: give exactly one of file or vault")
    if vault is not None and ("/data/" not in vault or vault.startswith("/")):
        raise ConfigError(f"{name}.vault must be a KV v2 path MOUNT/data/PATH")
    names = {f: _opt_str(value.get(f), f"{name}.{f}") for f in S3_FIELDS}
    for field, given in names.items():
        if given is not None and not _PARAM.fullmatch(given):
            raise ConfigError(f"{name}.{field} must be a plain field name")
    if vault is not None and (names["access_key_id"] is None or names["secret_access_key"] is None):
        raise ConfigError(f"{name}: a vault credential names its access_key_id and secret_access_key fields")
    return Credential(
        file,
        vault,
        None,
        "sigv4",
        access_key_id=names["access_key_id"] or "access_key_id",
        secret_access_key=names["secret_access_key"] or "secret_access_key",
        session_token=names["session_token"] or ("session_token" if file is not None else None),
    )


# ------------------------------------------------------------------ routes


def _bucket_route(value: dict[str, object], audience: str, upstream: str, name: str) -> Route:
    _only(value, {"kind", "audience", "bucket", "upstream", "region", "credential"}, name)
    bucket = _str(value.get("bucket"), f"{name}.bucket")
    try:
        validate_resource("bucket", f"s3://{bucket}/")
    except InvalidRequest:
        raise ConfigError(f"{name}.bucket must be an S3 bucket name (lower case, 3..63 characters)") from None
    region = _str(value.get("region"), f"{name}.region")
    if not _REGION.fullmatch(region):
        raise ConfigError(f"{name}.region must be a region name such as eu-west-1")
    credential = _s3_credential(value.get("credential"), f"{name}.credential")
    return Route("bucket", audience, bucket, None, upstream, credential, region=region)


def _route(value: object, name: str) -> Route:
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a mapping")
    kind = value.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"{name}.kind must be one of {', '.join(KINDS)}")
    audience = value.get("audience")
    if not is_audience(audience):
        raise ConfigError(f"{name}.audience is not an audience name")
    upstream = _url(value.get("upstream"), f"{name}.upstream")
    if kind == "bucket":
        return _bucket_route(value, str(audience), upstream, name)
    credential = _credential(value.get("credential"), str(kind), f"{name}.credential")
    if kind == "git":
        _only(value, {"kind", "audience", "host", "upstream", "credential", "push_refs"}, name)
        host = _str(value.get("host"), f"{name}.host")
        try:
            validate_resource("git", f"{host}/owner/repo")
        except InvalidRequest:
            raise ConfigError(f"{name}.host must be a lower-case DNS name") from None
        push_refs = _opt_str(value.get("push_refs"), f"{name}.push_refs")
        if push_refs is not None and (
            not _PUSH_REFS.fullmatch(push_refs)
            or ".." in push_refs
            or re.sub(r"\{(task|agent)\}", "", push_refs).count("{")
            + re.sub(r"\{(task|agent)\}", "", push_refs).count("}")
        ):
            raise ConfigError(
                f"{name}.push_refs must be a ref prefix such as refs/heads/agents/{{agent}}/{{task}}/ "
                "(placeholders {agent} and {task} only)"
            )
        return Route("git", str(audience), host, None, upstream, credential, push_refs=push_refs)
    _only(value, {"kind", "audience", "origin", "upstream", "credential", "strip_headers", "strip_query"}, name)
    origin = _str(value.get("origin"), f"{name}.origin").rstrip("/")
    try:
        validate_resource("http", origin + "/")
    except InvalidRequest:
        raise ConfigError(f"{name}.origin must be https://HOST[:PORT] (lower case, no default port)") from None
    return Route(
        "http",
        str(audience),
        origin.removeprefix("https://"),
        origin,
        upstream,
        credential,
        strip_headers=_names(value.get("strip_headers"), f"{name}.strip_headers", _TOKEN_HEADER),
        strip_query=_names(value.get("strip_query"), f"{name}.strip_query", _PARAM),
    )


# ------------------------------------------------------------------ the whole file


def _raw(text: str | bytes | None, where: str, env: Mapping[str, str]) -> tuple[dict[str, object], dict[str, int]]:
    raw: dict[str, object] = {}
    lines: dict[str, int] = {}
    if text is not None:
        node = _parse(text, where)
        if not isinstance(node, YMap):
            raise ConfigError(f"{where}: the settings file is a mapping of setting: value")
        lines = _lines(node)
        for key, line, _ in node.entries:
            if key not in _TOP:
                raise ConfigError(f"{where}:{line}: unknown setting {key!r}")
        plain = _plain(node)
        if not isinstance(plain, dict):  # a YMap is always read as a dict
            raise ConfigError(f"{where}: not a mapping")
        raw.update(plain)
    for key in _TOP:
        value = env.get(f"GATEWAY_{key.upper()}")
        if value is None:
            continue
        if key == "routes":
            raw[key] = _plain(_parse(value, "GATEWAY_ROUTES"))
        elif _TOP[key] is int:
            if not value.isdigit():
                raise ConfigError(f"GATEWAY_{key.upper()} must be a whole number")
            raw[key] = int(value)
        else:
            raw[key] = value
    return raw, lines


def load_config(
    text: str | bytes | None, where: str = "gateway.yaml", env: Mapping[str, str] | None = None
) -> GatewayConfig:
    """The checked settings of ``text`` (the file's content; None: environment only)."""
    raw, lines = _raw(text, where, env or {})

    def at(key: str) -> str:
        return f"{where}:{lines[key]}: {key}" if key in lines else key

    for key in ("issuer", "jwks_url", "revocation"):
        if raw.get(key) is None:
            raise ConfigError(f"{key} is required (setting {key!r} or GATEWAY_{key.upper()})")
    issuer = _url(raw["issuer"], at("issuer"))
    jwks_url = _url(raw["jwks_url"], at("jwks_url"))
    revocation = _str(raw["revocation"], at("revocation"))
    if revocation != "introspection" and not revocation.startswith(URL_SCHEMES):
        raise ConfigError(f"{at('revocation')} must be a Redis URL ({', '.join(URL_SCHEMES)}) or introspection")
    service_key_file = _opt_str(raw.get("service_key_file"), at("service_key_file"))
    containment = raw.get("containment", "revoke-task")
    if containment not in CONTAINMENTS:
        raise ConfigError(f"{at('containment')} must be one of {', '.join(CONTAINMENTS)}")
    if service_key_file is None and (revocation == "introspection" or containment == "revoke-task"):
        raise ConfigError("service_key_file is required for revocation: introspection and containment: revoke-task")
    port = raw.get("port", 8800)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ConfigError(f"{at('port')} must be a port number")
    routes_raw = raw.get("routes")
    if not isinstance(routes_raw, list) or not routes_raw:
        raise ConfigError("routes must be a non-empty list")
    routes = tuple(_route(r, f"routes[{i}]") for i, r in enumerate(routes_raw))
    seen: set[tuple[str, str]] = set()
    for r in routes:
        if (r.kind, r.match) in seen:
            raise ConfigError(f"two {r.kind} routes for {r.match}")
        seen.add((r.kind, r.match))
    vault_addr = raw.get("vault_addr")
    vault_token_file = _opt_str(raw.get("vault_token_file"), at("vault_token_file"))
    if any(r.credential.vault for r in routes) and (vault_addr is None or vault_token_file is None):
        raise ConfigError("vault credentials need vault_addr and vault_token_file")
    redis_prefix = raw.get("redis_prefix")
    workers = raw.get("workers", 1)
    if not isinstance(workers, int) or isinstance(workers, bool) or not 1 <= workers <= 64:
        raise ConfigError(f"{at('workers')} must be 1..64")
    return GatewayConfig(
        issuer=issuer,
        jwks_url=jwks_url,
        service_key_file=service_key_file,
        revocation=revocation,
        redis_url=_opt_str(raw.get("redis_url"), at("redis_url")),
        redis_prefix=default_prefix(issuer) if redis_prefix is None else _str(redis_prefix, at("redis_prefix")),
        vault_addr=None if vault_addr is None else _vault_addrs(vault_addr, at("vault_addr")),
        vault_token_file=vault_token_file,
        host=_str(raw.get("host", "127.0.0.1"), at("host")),
        port=port,
        public_url=None if raw.get("public_url") is None else _url(raw["public_url"], at("public_url")),
        containment=str(containment),
        upstream_timeout=seconds(raw.get("upstream_timeout", 30), at("upstream_timeout")),
        secret_refresh=seconds(raw.get("secret_refresh", 30), at("secret_refresh")),
        routes=routes,
        workers=workers,
    )
