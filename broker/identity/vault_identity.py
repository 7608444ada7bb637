"""The ``vault`` identity method (README, "Agent identities"): a presented Vault token, matched. Pure.

An agent logs in to Vault/OpenBao itself (AppRole, Kubernetes, JWT, ...) and presents the
token it got. The broker looks the token up with its own token (``auth/token/lookup``,
``broker.backends.vault_lookup``) and this module decides whether what Vault answered
satisfies an agent's ``VaultIdentity``. Every constraint given must hold:

- ``role``: the token came from a login on the AppRole mount (its ``path`` is exactly
  ``auth/<mount>/login``, mount ``approle`` unless configured) and AppRole wrote that role
  name into its ``meta.role_name``. Any holder of ``auth/token/create`` can put
  ``role_name`` into a token's ``meta``, so metadata alone never proves a role. OpenBao
  lower-cases role names (``Agent-X`` logs in as ``agent-x``); the comparison is exact, so
  a policy must name the role in lower case.
- ``entity``: the token's ``entity_id`` is exactly this identity-store ID. Vault sets it;
  a child token an agent creates from its own token inherits it (it is the same agent).
- ``metadata``: every pair is in the token's ``meta`` with exactly that value, and the token
  came from an auth method's login (``path`` under ``auth/`` but not ``auth/token/``), whose
  metadata that method wrote (AppRole: the secret-id's metadata plus ``role_name``;
  Kubernetes: the service account; JWT/OIDC: ``claim_mappings``). A token made through the
  token store (``auth/token/create*``) carries whatever its creator typed, so it never
  satisfies a metadata constraint. Metadata is only as trustworthy as whoever may write it
  (for AppRole: whoever may generate secret-ids); pair it with a ``role`` or an ``entity``.
- The token lives in the broker's own (root) namespace: a token of a child namespace is
  refused, since a tenant there can name its roles and metadata as it likes.
- The token is a service token without a use limit. A batch token cannot be revoked in
  Vault (it lives until its TTL whatever the admin does), so "revoke the Vault token and
  the agent is locked out" would not hold; a token with ``num_uses`` would promise a bound
  the broker does not keep (a lookup spends none of its uses, and counting mints against
  it would need the broker to spend them). Both are refused, whatever the identity says.

``looks_like_vault_token`` tells a Vault token from the other bearer credentials: a
``cbk_`` client secret and a JWT (whose first segment is base64url JSON, ``eyJ...``, never
one of the Vault prefixes).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from broker.errors import Unauthenticated
from broker.identity.single_match import NoSingleMatch, P, single_match
from broker.policy.model import VaultIdentity

__all__ = [
    "DEFAULT_APPROLE_MOUNT",
    "MAX_VAULT_TOKEN_LENGTH",
    "VaultTokenInfo",
    "approle_role",
    "has_namespace_suffix",
    "looks_like_vault_token",
    "match_vault_identity",
    "token_info_from_lookup",
]

DEFAULT_APPROLE_MOUNT: Final = "approle"
#: the longest credential taken for a Vault token: the bearer credential cap. Batch tokens
#: carry their policies and metadata (30 policies and 40 metadata pairs: ~2,500 characters)
MAX_VAULT_TOKEN_LENGTH: Final = 8192
#: service tokens ``s.`` (OpenBao, Vault before 1.10) and ``hvs.`` (Vault 1.10+), batch
#: tokens ``b.`` and ``hvb.``; the body is base62 or base64url; a token of a child
#: namespace ends in ``.<namespace id>``. Recovery tokens (``r.``/``hvr.``) are not taken.
_VAULT_TOKEN: Final = re.compile(r"(?:hvs|hvb|s|b)\.[A-Za-z0-9_-]{20,}(\.[A-Za-z0-9]{1,32})?")
_MOUNT: Final = re.compile(r"[A-Za-z0-9_-]{1,64}(?:/[A-Za-z0-9_-]{1,64}){0,7}")
_TOKEN_STORE: Final = "auth/token/"  # noqa: S105 (a mount path, not a secret)
_SERVICE_TOKEN: Final = "service"  # noqa: S105 (a token type, not a secret)


@dataclass(frozen=True, slots=True)
class VaultTokenInfo:
    """What a lookup of a presented token says, as far as matching and auditing need.

    Never the token itself. ``accessor`` names the token in audit events ("" for batch
    tokens); ``ttl`` is the seconds left at lookup (0: no expiry); ``num_uses`` the uses
    left (0: unlimited); ``namespace_path`` is "" in the root namespace.
    """

    accessor: str
    entity_id: str
    meta: tuple[tuple[str, str], ...]  # sorted by key
    path: str
    policies: tuple[str, ...]
    namespace_path: str
    token_type: str  # "service" or "batch"
    ttl: int
    num_uses: int

    def meta_value(self, key: str) -> str | None:
        for name, value in self.meta:
            if name == key:
                return value
        return None


def looks_like_vault_token(credential: str) -> bool:
    """Whether ``credential`` has the form of a Vault/OpenBao service or batch token."""
    return len(credential) <= MAX_VAULT_TOKEN_LENGTH and _VAULT_TOKEN.fullmatch(credential) is not None


def has_namespace_suffix(credential: str) -> bool:
    """Whether a Vault token names a child namespace (``s.<body>.<namespace id>``)."""
    match = _VAULT_TOKEN.fullmatch(credential) if len(credential) <= MAX_VAULT_TOKEN_LENGTH else None
    return match is not None and match.group(1) is not None


def approle_role(info: VaultTokenInfo, mount: str = DEFAULT_APPROLE_MOUNT) -> str | None:
    """The AppRole role the token logged in as, if it came from a login on ``mount``."""
    _check_mount(mount)
    if info.path != f"auth/{mount}/login":
        return None
    return info.meta_value("role_name")


def match_vault_identity(
    info: VaultTokenInfo, identity: VaultIdentity, *, approle_mount: str = DEFAULT_APPROLE_MOUNT
) -> str | None:
    """None if the looked-up token satisfies every constraint of ``identity``, else why not."""
    _check_mount(approle_mount)
    if identity.role is None and identity.entity is None and not identity.metadata:
        return "the identity constrains nothing"  # the policy loader refuses this; empty means deny
    if info.namespace_path:
        return "the token belongs to another namespace"
    if info.token_type != _SERVICE_TOKEN:
        kind = info.token_type or "typeless"
        return f"the token is a {kind} token: Vault cannot revoke it; log in for a service token"
    if info.num_uses:
        return "the token has a use limit, which a lookup does not spend: log in without token_num_uses"
    if identity.role is not None:
        role = approle_role(info, approle_mount)
        if role is None:
            return f"role: the token is not from an AppRole login on auth/{approle_mount}"
        if role != identity.role:
            return f"role: the token's AppRole role is {role!r}, not {identity.role!r}"
    if identity.entity is not None and (not info.entity_id or info.entity_id != identity.entity):
        return "entity: the token belongs to another entity" if info.entity_id else "entity: the token has no entity"
    if identity.metadata:
        if not info.path.startswith("auth/") or info.path.startswith(_TOKEN_STORE):
            return "metadata: the token was not issued by an auth method's login, so its creator chose its metadata"
        for key, expected in identity.metadata:
            actual = info.meta_value(key)
            if actual is None:
                return f"metadata: the token has no {key!r}"
            if actual != expected:
                return f"metadata: the token's {key!r} differs"
    return None


def select_vault_principal(info: VaultTokenInfo, principals: Iterable[P]) -> P:
    """The one principal whose ``vault`` identity the looked-up token matches; none, or
    more than one (an ambiguous policy), is ``Unauthenticated``."""

    def reason_against(principal: P) -> str | None:
        assert isinstance(principal.identity, VaultIdentity)  # noqa: S101 -- filtered below
        return match_vault_identity(info, principal.identity)

    try:
        return single_match((p for p in principals if isinstance(p.identity, VaultIdentity)), reason_against)
    except NoSingleMatch as e:
        if e.matched:
            raise Unauthenticated(f"vault identity: matches {len(e.matched)} principals: ambiguous, refused") from None
        raise Unauthenticated("vault identity: no principal matches: " + "; ".join(e.misses[:8])) from None


def token_info_from_lookup(response: object, presented: str) -> VaultTokenInfo:
    """The ``VaultTokenInfo`` of an ``auth/token/lookup`` answer about ``presented``.

    Raises ``ValueError`` (naming no value) if the answer is malformed or is about another
    token: a lookup without a token looks up the caller's own, which is never an agent's.
    """
    data = response.get("data") if isinstance(response, Mapping) else None
    if not isinstance(data, Mapping):
        raise ValueError("the lookup has no data")
    token_id = data.get("id")
    if not isinstance(token_id, str) or not hmac.compare_digest(token_id.encode(), presented.encode()):
        raise ValueError("the lookup is about another token")
    meta = data.get("meta")
    if meta is None:
        meta = {}
    if not isinstance(meta, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ValueError("the lookup's meta is not a map of strings")
    policies = data.get("policies")
    if policies is None:
        policies = []
    if not isinstance(policies, list) or not all(isinstance(p, str) for p in policies):
        raise ValueError("the lookup's policies are not a list of strings")
    return VaultTokenInfo(
        accessor=_text(data, "accessor"),
        entity_id=_text(data, "entity_id"),
        meta=tuple(sorted(meta.items())),
        path=_text(data, "path"),
        policies=tuple(policies),
        namespace_path=_text(data, "namespace_path", ""),
        token_type=_text(data, "type"),
        ttl=_count(data, "ttl"),
        num_uses=_count(data, "num_uses"),
    )


def _check_mount(mount: str) -> None:
    if not _MOUNT.fullmatch(mount):
        raise ValueError("auth mount outside [A-Za-z0-9_-] path segments")


def _text(data: Mapping[str, object], key: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise ValueError(f"the lookup's {key} is not a string")
    return value


def _count(data: Mapping[str, object], key: str) -> int:
    value = data.get(key)
    if type(value) is not int or value < 0:
        raise ValueError(f"the lookup's {key} is not a count")
    return value
