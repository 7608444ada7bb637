"""Server settings: a YAML file, overridden by ``BROKER_*`` environment variables.

Every setting has an environment twin, upper-cased with the ``BROKER_`` prefix (for
example ``redis_url`` and ``BROKER_REDIS_URL``). Secrets never live in the file: the
Vault token comes from ``BROKER_VAULT_TOKEN`` or from a file named by
``vault_token_file``; admins are named by the SHA-256 of their key.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from broker.audit.checkpoint import DEFAULT_EVERY_EVENTS, DEFAULT_INTERVAL
from broker.backends import redis_keys, redis_options
from broker.errors import PolicyIssue
from broker.policy.yamlstrict import YMap, YScalar, YSeq, parse_yaml
from broker.token.algorithms import Algorithm
from broker.vault_addrs import VaultAddrError, parse_vault_addrs

_HEX64 = re.compile(r"[0-9a-f]{64}")


class SettingsError(ValueError):
    """A setting is missing or wrong; the message names it."""


@dataclass(frozen=True, slots=True)
class Settings:
    issuer: str
    scopes: Path
    admin_key_sha256: tuple[str, ...]
    host: str = "127.0.0.1"
    port: int = 8700
    signer: Literal["vault", "local"] = "vault"
    vault_addr: str = ""
    vault_token: str = field(default="", repr=False)
    # the file the token was read from, followed for a new token (broker.backends.vault_token);
    # empty when the token came from BROKER_VAULT_TOKEN
    vault_token_file: str = ""
    # how the broker gets its Vault token: "token" (BROKER_VAULT_TOKEN or vault_token_file),
    # or "approle": it logs in itself with vault_role_id and the secret id in
    # vault_secret_id_file (read at each login), on vault_auth_mount (broker.backends.vault_login)
    vault_auth: Literal["token", "approle"] = "token"
    vault_auth_mount: str = "approle"
    vault_role_id: str = ""
    vault_secret_id_file: str = ""
    # a PEM bundle of the CAs that sign Vault's certificate (a private CA); empty: the
    # system's trust store. Never read from the environment's REQUESTS_CA_BUNDLE.
    vault_ca_file: str = ""
    # a client certificate and its key (PEM files) for a Vault listener that requires one
    vault_client_cert: str = ""
    vault_client_key: str = ""
    # the same for Redis over TLS (a ``rediss://`` redis_url); the URL then carries it to
    # every Redis client (``ssl_ca_certs``)
    redis_ca_file: str = ""
    transit_mount: str = "transit"
    transit_key: str = "capbroker"
    signing_alg: Algorithm = "EdDSA"
    # "session": in-process keys endorsed by the Transit key (no Vault call per token);
    # "transit": every token signed by Transit
    signing: Literal["session", "transit"] = "session"
    session_key_window: float = 900.0  # seconds a session key signs (plus the lead)
    session_key_lead: float = 300.0  # seconds a successor is published before it signs
    state: Literal["redis", "memory"] = "redis"
    redis_url: str = field(default="", repr=False)  # may carry a password
    # every key and channel of this deployment in Redis starts with it; "" = derived from
    # the issuer (``key_prefix``), so deployments sharing a Redis server never cross
    redis_prefix: str = ""
    # replicas that must hold a revocation before it is acknowledged (Redis WAIT): "auto"
    # = one when the primary has any replica, else none; or a number (0 = never wait)
    redis_wait_replicas: str = "auto"
    audit_stream: str = ""  # "" = <key_prefix>audit (``stream``)
    # a signed checkpoint of the audit chain per this many of a process's events, or
    # this many seconds after the oldest of them (broker.audit.checkpoint)
    audit_checkpoint_events: int = DEFAULT_EVERY_EVENTS
    audit_checkpoint_interval: float = DEFAULT_INTERVAL
    # retention (SPEC 5): Redis keeps about tail + segment events; older ones move to
    # segment files in this directory, which every replica must share (broker.backends.audit_archiver)
    audit_archive_dir: str = ""
    audit_tail_events: int = 10_000
    audit_segment_events: int = 10_000
    backend_timeout: float = 1.0
    key_refresh: float = 10.0
    clock_skew: float = 5.0  # how far replica clocks may disagree (seconds)
    max_body_bytes: int = 64 * 1024
    workers: int = 1
    # how `broker serve` knows Redis keeps what it is given (broker/backends/redis_durability.py):
    # "checked" reads CONFIG; "accept-volatile" also starts on a Redis that keeps nothing on
    # disk; "asserted-aof"/"asserted-rdb" stand in where CONFIG is disabled
    redis_durability: Literal["checked", "accept-volatile", "asserted-aof", "asserted-rdb"] = "checked"

    @property
    def key_prefix(self) -> str:
        """The prefix of every Redis key and channel: ``redis_prefix``, or derived from the issuer."""
        return self.redis_prefix or redis_keys.default_prefix(self.issuer)

    @property
    def wait_replicas(self) -> int | None:
        """``redis_wait_replicas`` as ``RedisState`` takes it (None: auto)."""
        return None if self.redis_wait_replicas == "auto" else int(self.redis_wait_replicas)

    @property
    def stream(self) -> str:
        """The audit stream: ``audit_stream``, or ``<key_prefix>audit``."""
        return self.audit_stream or redis_keys.audit_stream(self.key_prefix)


_FIELDS: dict[str, type] = {
    "issuer": str,
    "scopes": str,
    "admin_key_sha256": list,
    "host": str,
    "port": int,
    "signer": str,
    "vault_addr": str,
    "vault_token_file": str,
    "vault_ca_file": str,
    "vault_client_cert": str,
    "vault_client_key": str,
    "vault_auth": str,
    "vault_auth_mount": str,
    "vault_role_id": str,
    "vault_secret_id_file": str,
    "redis_ca_file": str,
    "transit_mount": str,
    "transit_key": str,
    "signing_alg": str,
    "signing": str,
    "session_key_window": float,
    "session_key_lead": float,
    "state": str,
    "redis_url": str,
    "redis_prefix": str,
    "redis_wait_replicas": str,
    "audit_stream": str,
    "audit_checkpoint_events": int,
    "audit_checkpoint_interval": float,
    "audit_archive_dir": str,
    "audit_tail_events": int,
    "audit_segment_events": int,
    "backend_timeout": float,
    "key_refresh": float,
    "clock_skew": float,
    "max_body_bytes": int,
    "workers": int,
    "redis_durability": str,
}


def _from_file(path: Path) -> dict[str, Any]:
    parsed = parse_yaml(path.read_bytes(), str(path), decimals=True)
    if isinstance(parsed, PolicyIssue):
        raise SettingsError(str(parsed))
    if not isinstance(parsed, YMap):
        raise SettingsError(f"{path}: the settings file is a mapping of setting: value")
    out: dict[str, Any] = {}
    for key, line, node in parsed.entries:
        if key == "vault_token":
            raise SettingsError(
                f"{path}:{line}: no secrets in the settings file; use BROKER_VAULT_TOKEN or vault_token_file"
            )
        if key not in _FIELDS:
            close = difflib.get_close_matches(key, _FIELDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SettingsError(f"{path}:{line}: unknown setting {key!r}{hint}")
        if isinstance(node, YSeq):
            out[key] = [str(item.value) if isinstance(item, YScalar) else "" for item in node.items]
        elif isinstance(node, YScalar):
            out[key] = node.value
        else:
            raise SettingsError(f"{path}:{line}: {key} must be a value")
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in (*_FIELDS, "vault_token"):
        value = env.get(f"BROKER_{name.upper()}")
        if value is not None:
            out[name] = [v.strip() for v in value.split(",") if v.strip()] if name == "admin_key_sha256" else value
    return out


def _seconds(value: object) -> float:
    """Seconds as a number, or a string: ``"0.8"``, ``"800ms"``, ``"2s"``, ``"15m"``, ``"1h"``
    (YAML files hold no floats)."""
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if text.endswith("ms"):
        return float(text[:-2]) / 1000
    for unit, factor in (("m", 60), ("h", 3600)):
        if text.endswith(unit):
            return float(text[:-1]) * factor
    return float(text.removesuffix("s"))


def _typed(name: str, value: Any) -> Any:
    kind = _FIELDS.get(name, str)
    try:
        if kind is int and not isinstance(value, bool):
            return int(value)
        if kind is float and not isinstance(value, bool):
            return _seconds(value)
    except (TypeError, ValueError):
        form = "a duration: seconds or '800ms', '2s', '15m', '1h'" if kind is float else "a whole number"
        raise SettingsError(f"{name} must be {form}, not {str(value)[:40]!r}") from None
    if kind is list:
        return value if isinstance(value, list) else [value]
    if kind in (int, float) or not isinstance(value, str):
        raise SettingsError(f"{name} must be a {kind.__name__}")
    return value


def load_settings(path: str | Path | None, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    raw = _from_file(Path(path)) if path is not None else {}
    raw.update(_from_env(env))
    values = {name: _typed(name, value) for name, value in raw.items()}
    token_file = values.get("vault_token_file")
    if token_file and not values.get("vault_token"):
        values["vault_token"] = Path(token_file).read_text().strip()
    elif token_file:
        values["vault_token_file"] = ""  # BROKER_VAULT_TOKEN wins; the file is not followed
    for required in ("issuer", "scopes"):
        if not values.get(required):
            raise SettingsError(f"{required} is required (setting {required!r} or BROKER_{required.upper()})")
    values["scopes"] = Path(values["scopes"])
    admins = tuple(values.pop("admin_key_sha256", ()))
    if not admins or not all(_HEX64.fullmatch(h) for h in admins):
        raise SettingsError("admin_key_sha256: one or more lower-case hex SHA-256 hashes of admin keys")
    settings = Settings(admin_key_sha256=admins, **values)
    _check(settings)
    _check_tls(settings)
    _check_vault_auth(settings)
    if settings.redis_ca_file:
        settings = replace(settings, redis_url=_with_ca(settings.redis_url, settings.redis_ca_file))
    return settings


def _check_vault_auth(s: Settings) -> None:
    if s.vault_auth not in ("token", "approle"):
        raise SettingsError("vault_auth is token (BROKER_VAULT_TOKEN or vault_token_file) or approle")
    if s.vault_auth == "approle":
        if s.vault_token:
            raise SettingsError("vault_auth approle logs in by itself: drop vault_token_file and BROKER_VAULT_TOKEN")
        if not s.vault_role_id or not s.vault_secret_id_file:
            raise SettingsError("vault_auth approle needs vault_role_id and vault_secret_id_file")
        if not Path(s.vault_secret_id_file).is_file():
            raise SettingsError(f"vault_secret_id_file: no such file {s.vault_secret_id_file!r}")


def _check_tls(s: Settings) -> None:
    for name, path in (("vault_ca_file", s.vault_ca_file), ("redis_ca_file", s.redis_ca_file)):
        if path and not Path(path).is_file():
            raise SettingsError(f"{name}: no such file {path!r} (a PEM bundle of CA certificates)")
    if bool(s.vault_client_cert) != bool(s.vault_client_key):
        raise SettingsError("vault_client_cert and vault_client_key go together (a certificate and its key)")
    for name, path in (("vault_client_cert", s.vault_client_cert), ("vault_client_key", s.vault_client_key)):
        if path and not Path(path).is_file():
            raise SettingsError(f"{name}: no such file {path!r} (PEM)")
    if (s.vault_ca_file or s.vault_client_cert) and not s.vault_addr.startswith("https://"):
        raise SettingsError("vault_ca_file and vault_client_cert are for an https:// vault_addr")
    if s.redis_ca_file and not s.redis_url.startswith("rediss://"):
        raise SettingsError("redis_ca_file is for a rediss:// redis_url (Redis over TLS)")


def _with_ca(url: str, ca_file: str) -> str:
    """``url`` with ``ssl_ca_certs``: redis-py hands URL parameters to every connection."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "ssl_ca_certs"] + [("ssl_ca_certs", ca_file)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _check(s: Settings) -> None:
    if s.signer not in ("vault", "local") or s.state not in ("redis", "memory"):
        raise SettingsError("signer is vault|local, state is redis|memory")
    if s.signing_alg not in ("EdDSA", "ES256"):
        raise SettingsError("signing_alg is EdDSA or ES256")
    if s.signing not in ("session", "transit"):
        raise SettingsError("signing is session (keys endorsed by Transit) or transit (every token in Transit)")
    if not 60 <= s.session_key_window <= 86400 or not 0 <= s.session_key_lead <= s.session_key_window:
        raise SettingsError("session_key_window is 60s to 86400s; session_key_lead 0 to the window")
    if s.signer == "vault" and not (s.vault_addr and (s.vault_token or s.vault_auth == "approle")):
        raise SettingsError("signer vault needs vault_addr and a Vault token (BROKER_VAULT_TOKEN or vault_token_file)")
    if s.vault_addr:
        try:
            parse_vault_addrs(s.vault_addr)
        except VaultAddrError as e:
            raise SettingsError(str(e)) from None
    if s.state == "redis" and not s.redis_url:
        raise SettingsError("state redis needs redis_url")
    if not 0 <= s.audit_tail_events <= 10_000_000 or not 1 <= s.audit_segment_events <= 1_000_000:
        raise SettingsError("audit_tail_events is 0 to 10,000,000; audit_segment_events 1 to 1,000,000")
    if not 0 <= s.clock_skew <= 60:
        raise SettingsError("clock_skew is 0 to 60 seconds (the largest verifier leeway)")
    if not 0.05 <= s.backend_timeout <= 10:
        raise SettingsError("backend_timeout is 0.05 to 10 seconds")
    if not 0 < s.port < 65536:
        raise SettingsError("port out of range")
    if not 1 <= s.audit_checkpoint_events <= 1_000_000 or not 1 <= s.audit_checkpoint_interval <= 3600:
        raise SettingsError("audit_checkpoint_events is 1 to 1000000; audit_checkpoint_interval 1s to 3600s")
    if not 1 <= s.workers <= 64:
        raise SettingsError("workers is 1 to 64 processes")
    if s.redis_durability not in ("checked", "accept-volatile", "asserted-aof", "asserted-rdb"):
        raise SettingsError("redis_durability is checked, accept-volatile, asserted-aof or asserted-rdb")
    if s.redis_wait_replicas != "auto" and not (
        s.redis_wait_replicas.isdigit() and 0 <= int(s.redis_wait_replicas) <= 5
    ):
        raise SettingsError("redis_wait_replicas is auto or a number of replicas, 0 to 5")
    if s.redis_url.startswith(redis_keys.SENTINEL_SCHEME):
        try:
            redis_options.parse_sentinel_url(s.redis_url)
        except ValueError as e:
            raise SettingsError(f"redis_url: {e}") from None
    if s.redis_prefix:
        try:
            redis_keys.check_prefix(s.redis_prefix)
        except ValueError as e:
            raise SettingsError(str(e)) from None
    if not s.issuer.startswith(("https://", "http://127.0.0.1", "http://localhost")):
        raise SettingsError("issuer must be an https:// URL (http only on loopback)")
