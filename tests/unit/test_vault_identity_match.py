"""The ``vault`` identity method's pure parts: reading a lookup, matching it, telling a
Vault token from the other bearer credentials. The lookups are shaped as OpenBao 2.7.2
answers them (tests/integration/test_vault_identity.py checks that on a real server)."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from broker.errors import Unauthenticated
from broker.identity.vault_identity import (
    MAX_VAULT_TOKEN_LENGTH,
    VaultTokenInfo,
    approle_role,
    has_namespace_suffix,
    looks_like_vault_token,
    match_vault_identity,
    select_vault_principal,
    token_info_from_lookup,
)
from broker.policy.model import Agent, KeyIdentity, Location, VaultIdentity
from broker.service.credentials import new_client_secret
from broker.token.b64 import b64url_encode

TOKEN = "s.Zign8vb0Q9Cylb56BXakJDxR"
ENTITY = "813abc24-3b8f-100a-7a0c-41c01cc96623"

#: ``auth/token/lookup`` of an AppRole login token (role agent1, secret-id metadata team=blue)
APPROLE_LOOKUP: dict[str, Any] = {
    "request_id": "5ee57be8-b355-736b-e823-8b1f81e6a0ae",
    "lease_id": "",
    "renewable": False,
    "lease_duration": 0,
    "data": {
        "accessor": "GspwVmDMpEmTfvpQm94htURB",
        "creation_time": 1795288860,
        "creation_ttl": 3600,
        "display_name": "approle",
        "entity_id": ENTITY,
        "expire_time": "2026-11-21T20:21:00.677960435Z",
        "explicit_max_ttl": 0,
        "id": TOKEN,
        "issue_time": "2026-11-21T19:21:00.677964102Z",
        "meta": {"role_name": "agent1", "team": "blue"},
        "num_uses": 0,
        "orphan": True,
        "path": "auth/approle/login",
        "policies": ["default"],
        "renewable": True,
        "ttl": 3597,
        "type": "service",
    },
    "wrap_info": None,
    "warnings": None,
    "auth": None,
}

#: a field to leave out of a lookup
_DROP = object()


def lookup(**changes: Any) -> dict[str, Any]:
    answer = copy.deepcopy(APPROLE_LOOKUP)
    for key, value in changes.items():
        if value is _DROP:
            del answer["data"][key]
        else:
            answer["data"][key] = value
    return answer


def info(**changes: Any) -> VaultTokenInfo:
    return token_info_from_lookup(lookup(**changes), changes.get("id", TOKEN))


# ---------------------------------------------------------------------- reading a lookup


def test_an_approle_lookup_reads_into_what_matching_and_auditing_need() -> None:
    got = info()
    assert got == VaultTokenInfo(
        accessor="GspwVmDMpEmTfvpQm94htURB",
        entity_id=ENTITY,
        meta=(("role_name", "agent1"), ("team", "blue")),
        path="auth/approle/login",
        policies=("default",),
        namespace_path="",
        token_type="service",
        ttl=3597,
        num_uses=0,
    )
    assert TOKEN not in repr(got)
    assert got.meta_value("team") == "blue"
    assert got.meta_value("nope") is None


def test_a_token_without_meta_or_policies_reads_as_empty() -> None:
    got = info(meta=None, policies=None, entity_id="", path="auth/token/create", accessor="")
    assert got.meta == ()
    assert got.policies == ()
    assert got.entity_id == ""


def test_meta_is_sorted_whatever_order_vault_answers_in() -> None:
    assert info(meta={"z": "1", "a": "2"}).meta == (("a", "2"), ("z", "1"))


def test_a_lookup_about_another_token_is_refused() -> None:
    """``auth/token/lookup`` without a token looks up the caller: the broker's own token."""
    with pytest.raises(ValueError, match="another token") as e:
        token_info_from_lookup(lookup(id="s.0Qc2PPVJTR9FXSDFqERjXEje"), TOKEN)
    assert TOKEN not in str(e.value)
    with pytest.raises(ValueError, match="another token"):
        token_info_from_lookup(lookup(id=_DROP), TOKEN)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("accessor", None),
        ("accessor", 5),
        ("entity_id", None),
        ("path", _DROP),
        ("type", ["service"]),
        ("namespace_path", None),
        ("ttl", "3600"),
        ("ttl", -1),
        ("ttl", True),
        ("num_uses", 1.0),
        ("num_uses", _DROP),
        ("meta", {"k": 1}),
        ("meta", ["role_name", "x"]),
        ("policies", "default"),
        ("policies", [None]),
    ],
)
def test_a_malformed_lookup_is_refused(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=r"^the lookup's "):
        token_info_from_lookup(lookup(**{field: value}), TOKEN)


@pytest.mark.parametrize("answer", [None, [], {}, {"data": None}, {"data": []}, {"data": "x"}])
def test_a_lookup_without_data_is_refused(answer: object) -> None:
    with pytest.raises(ValueError, match="no data"):
        token_info_from_lookup(answer, TOKEN)


# ---------------------------------------------------------------------- matching


def test_role_matches_the_approle_role_of_an_approle_login() -> None:
    assert match_vault_identity(info(), VaultIdentity(role="agent1")) is None
    assert approle_role(info()) == "agent1"


def test_another_role_does_not_match() -> None:
    reason = match_vault_identity(info(), VaultIdentity(role="agent2"))
    assert reason == "role: the token's AppRole role is 'agent1', not 'agent2'"


def test_role_is_case_sensitive_as_openbao_lower_cases_role_names() -> None:
    assert match_vault_identity(info(), VaultIdentity(role="Agent1")) is not None


def test_a_hand_made_role_name_in_a_token_store_token_is_not_a_role() -> None:
    """Anyone who may call ``auth/token/create`` can write ``meta.role_name``."""
    forged = info(path="auth/token/create", entity_id="")
    assert forged.meta_value("role_name") == "agent1"
    assert approle_role(forged) is None
    assert match_vault_identity(forged, VaultIdentity(role="agent1")) == (
        "role: the token is not from an AppRole login on auth/approle"
    )


@pytest.mark.parametrize(
    "path",
    [
        "auth/token/create",
        "auth/token/create-orphan",
        "auth/token/create/approle",
        "auth/userpass/login/agent1",
        "auth/approle2/login",
        "auth/approle/login/extra",
        "auth/other/approle/login",
        "",
    ],
)
def test_role_needs_a_login_on_the_approle_mount_itself(path: str) -> None:
    assert match_vault_identity(info(path=path), VaultIdentity(role="agent1")) is not None


def test_the_approle_mount_is_configurable() -> None:
    elsewhere = info(path="auth/agents/approle/login")
    assert match_vault_identity(elsewhere, VaultIdentity(role="agent1"), approle_mount="agents/approle") is None
    assert match_vault_identity(elsewhere, VaultIdentity(role="agent1")) is not None
    assert match_vault_identity(info(), VaultIdentity(role="agent1"), approle_mount="agents/approle") is not None


@pytest.mark.parametrize("mount", ["", "/approle", "approle/", "app role", "a/../b", "approle\n"])
def test_a_malformed_mount_is_a_programming_error(mount: str) -> None:
    with pytest.raises(ValueError, match="mount"):
        match_vault_identity(info(), VaultIdentity(role="agent1"), approle_mount=mount)
    with pytest.raises(ValueError, match="mount"):
        approle_role(info(), mount)


def test_entity_matches_the_entity_id_exactly() -> None:
    assert match_vault_identity(info(), VaultIdentity(entity=ENTITY)) is None
    assert match_vault_identity(info(), VaultIdentity(entity=ENTITY.upper())) == (
        "entity: the token belongs to another entity"
    )
    assert match_vault_identity(info(), VaultIdentity(entity=ENTITY[:-1])) is not None


def test_a_token_without_an_entity_matches_no_entity() -> None:
    assert match_vault_identity(info(entity_id=""), VaultIdentity(entity="")) == "entity: the token has no entity"
    assert match_vault_identity(info(entity_id=""), VaultIdentity(entity=ENTITY)) == "entity: the token has no entity"


def test_an_entity_is_the_same_agent_through_a_child_token() -> None:
    """A child token inherits its parent's entity (Vault sets it, not the creator)."""
    child = info(path="auth/token/create", meta={"role_name": "agent1"})
    assert match_vault_identity(child, VaultIdentity(entity=ENTITY)) is None
    assert match_vault_identity(child, VaultIdentity(role="agent1")) is not None


def test_metadata_matches_every_pair_exactly() -> None:
    assert match_vault_identity(info(), VaultIdentity(metadata=(("team", "blue"),))) is None
    assert match_vault_identity(info(), VaultIdentity(metadata=(("role_name", "agent1"), ("team", "blue")))) is None
    assert match_vault_identity(info(), VaultIdentity(metadata=(("team", "red"),))) == (
        "metadata: the token's 'team' differs"
    )
    assert match_vault_identity(info(), VaultIdentity(metadata=(("team", "blue"), ("env", "prod")))) == (
        "metadata: the token has no 'env'"
    )
    assert match_vault_identity(info(), VaultIdentity(metadata=(("team", "Blue"),))) is not None
    assert match_vault_identity(info(), VaultIdentity(metadata=(("team", "blue "),))) is not None


@pytest.mark.parametrize(
    "path",
    ["auth/token/create", "auth/token/create-orphan", "auth/token/create/agents", "auth/token/root", "sys/x", ""],
)
def test_metadata_of_a_token_store_token_is_never_trusted(path: str) -> None:
    """The creator of a token-store token typed its metadata; no auth method vouched for it."""
    assert match_vault_identity(info(path=path), VaultIdentity(metadata=(("team", "blue"),))) == (
        "metadata: the token was not issued by an auth method's login, so its creator chose its metadata"
    )


@pytest.mark.parametrize("path", ["auth/approle/login", "auth/kubernetes/login", "auth/jwt/login", "auth/x/y/login"])
def test_metadata_of_any_auth_method_login_is_trusted(path: str) -> None:
    assert match_vault_identity(info(path=path), VaultIdentity(metadata=(("team", "blue"),))) is None


def test_every_constraint_must_hold() -> None:
    all_three = VaultIdentity(role="agent1", entity=ENTITY, metadata=(("team", "blue"),))
    assert match_vault_identity(info(), all_three) is None
    assert match_vault_identity(info(entity_id="other"), all_three) is not None
    assert match_vault_identity(info(meta={"role_name": "agent1"}), all_three) is not None
    assert match_vault_identity(info(meta={"role_name": "agent2", "team": "blue"}), all_three) is not None


def test_a_token_of_another_namespace_matches_nothing() -> None:
    """A tenant of a child namespace can name its roles and metadata as it likes."""
    tenant = info(namespace_path="ns1/", entity_id=ENTITY + ".1QYnn", id=TOKEN + ".1QYnn")
    for identity in (
        VaultIdentity(role="agent1"),
        VaultIdentity(metadata=(("team", "blue"),)),
        VaultIdentity(entity=ENTITY + ".1QYnn"),
    ):
        assert match_vault_identity(tenant, identity) == "the token belongs to another namespace"


def test_an_identity_that_constrains_nothing_matches_nothing() -> None:
    assert match_vault_identity(info(), VaultIdentity()) == "the identity constrains nothing"


# ---------------------------------------------------------------------- telling credentials apart

#: tokens as OpenBao 2.7.2 and Vault issue them
VAULT_TOKENS = [
    TOKEN,  # OpenBao service
    "s.LR6F28zKTcnchJsd3LOGGeSd.1QYnnf",  # OpenBao service, child namespace
    "b.AAAAAQK-mKRYFWNW_cqurLAPGRn8hIeoYKPoCkj6VH6p16rnJUo63cPE6Ab26BVpLba93h2z2eIN-_SJZYmlUeBJcEQiNeJUvuQoG4LUb",
    "hvs.CAESIJ5kZ2xqVnJ3d2hqN2JmM2tweXZ2a3FzMzBhdXQ2eGdsaTYaHgocaHZzLk9hVGJvRk1zQk9Cc0Z1cjhvVlJXM0xBUw",
    "hvb.AAAAAQJgxDgqsGNorpoOR7hPZ5SU-ynBvCl764jyRP_fnX7WvkdkDzGjbLNGdPJOqpGmUHe4fqYf4x7QD6rdn7NOCp9IYhY4zuT",
]


@pytest.mark.parametrize("token", VAULT_TOKENS)
def test_the_forms_vault_and_openbao_issue_are_vault_tokens(token: str) -> None:
    assert looks_like_vault_token(token)


def test_a_child_namespace_token_is_told_apart() -> None:
    assert has_namespace_suffix("s.LR6F28zKTcnchJsd3LOGGeSd.1QYnnf")
    assert has_namespace_suffix(VAULT_TOKENS[2] + ".1QYnn")
    assert not has_namespace_suffix(TOKEN)
    assert not has_namespace_suffix(VAULT_TOKENS[2])
    assert not has_namespace_suffix("not a token.x")


@pytest.mark.parametrize(
    "credential",
    [
        "",
        "s.",
        "s.short",  # under 20 characters of body
        "r.Zign8vb0Q9Cylb56BXakJDxR",  # recovery tokens are never an agent's
        "hvr.Zign8vb0Q9Cylb56BXakJDxR",
        "S.Zign8vb0Q9Cylb56BXakJDxR",
        "x.Zign8vb0Q9Cylb56BXakJDxR",
        "hvs_Zign8vb0Q9Cylb56BXakJDxR",
        " " + TOKEN,
        TOKEN + " ",
        TOKEN + "\n",
        "s.Zign8vb0Q9Cylb56BXak/DxR",
        "s.Zign8vb0Q9Cylb56BXak+DxR",
        "s.Zign8vb0Q9Cylb56BXak=DxR",
        "s.Zign8vb0Q9Cylb56BXakJDxR.",
        "s.Zign8vb0Q9Cylb56BXakJDxR.1QY-n",  # a namespace id is base62
        "s.Zign8vb0Q9Cylb56BXakJDxR.1QYnn.x",
        "s.Zign8vb0Q9Cylb56BXakJDxR." + "a" * 33,
        "s.Zign8vb0Q9Cylb56BXakJDxé",
        "root-token-for-tests",  # a custom token id (root only) has no prefix: never taken
        "Bearer " + TOKEN,
        "s." + "A" * (MAX_VAULT_TOKEN_LENGTH - 1),
    ],
)
def test_everything_else_is_not_a_vault_token(credential: str) -> None:
    assert not looks_like_vault_token(credential)
    assert not has_namespace_suffix(credential)


def test_the_length_bound_is_inclusive() -> None:
    assert looks_like_vault_token("s." + "A" * (MAX_VAULT_TOKEN_LENGTH - 2))


def test_a_client_secret_is_never_a_vault_token() -> None:
    for _ in range(200):
        assert not looks_like_vault_token(new_client_secret())


def _jwts() -> list[str]:
    es = ec.generate_private_key(ec.SECP256R1())
    return [
        jwt.encode({"sub": "agent", "aud": "capbroker"}, "a-shared-secret-of-32-bytes-long", algorithm="HS256"),
        jwt.encode({"sub": "agent"}, es, algorithm="ES256", headers={"kid": "s.Zign8vb0Q9Cylb56BXakJDxR"}),
        jwt.encode({"role_name": "agent1"}, es, algorithm="ES256", headers={"typ": "cap+jwt"}),
    ]


@pytest.mark.parametrize("token", _jwts())
def test_a_jwt_is_never_a_vault_token(token: str) -> None:
    assert token.startswith("eyJ")
    assert not looks_like_vault_token(token)


def _segment(obj: object, lead: str) -> str:
    return b64url_encode((lead + json.dumps(obj)).encode())


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@given(
    header=st.dictionaries(st.text(max_size=12), _json_values, max_size=4),
    payload=st.dictionaries(st.text(max_size=12), _json_values, max_size=4),
    lead=st.sampled_from(["", " ", "\t", "\n", "\r\n"]),
    signature=st.binary(max_size=96),
)
def test_no_compact_jws_of_any_json_header_is_a_vault_token(
    header: dict[str, Any], payload: dict[str, Any], lead: str, signature: bytes
) -> None:
    """A JWS header is a base64url JSON object: never one of the prefixes s, b, hvs, hvb."""
    compact = f"{_segment(header, lead)}.{_segment(payload, '')}.{b64url_encode(signature)}"
    assert not looks_like_vault_token(compact)


@pytest.mark.parametrize("token", VAULT_TOKENS)
def test_no_vault_token_starts_with_a_jws_header(token: str) -> None:
    """The other way round: the first segment of a Vault token is never base64url JSON."""
    first = token.split(".", maxsplit=1)[0]
    try:
        decoded = base64.urlsafe_b64decode(first + "=" * (-len(first) % 4)).decode()
        parsed = json.loads(decoded)
    except (ValueError, UnicodeDecodeError):
        return
    pytest.fail(f"{first!r} decodes to JSON {parsed!r}")


# ---------------------------------------------------------------------- choosing the principal


def _principal(name: str, identity: object) -> Agent:
    return Agent(name, identity, ("s",), 600, None, "", Location("t.yaml", 1))  # type: ignore[arg-type]


def test_select_the_one_principal_the_token_matches() -> None:
    principals = [
        _principal("keyed", KeyIdentity("0" * 64)),
        _principal("other-role", VaultIdentity(role="agent2")),
        _principal("mine", VaultIdentity(role="agent1")),
    ]
    assert select_vault_principal(info(), principals).name == "mine"


def test_select_refuses_no_match_with_each_reason() -> None:
    with pytest.raises(Unauthenticated, match="vault identity: no principal matches: other-role: "):
        select_vault_principal(info(), [_principal("other-role", VaultIdentity(role="agent2"))])


def test_select_refuses_an_ambiguous_policy() -> None:
    principals = [_principal("a", VaultIdentity(role="agent1")), _principal("b", VaultIdentity(entity=ENTITY))]
    with pytest.raises(Unauthenticated, match="matches 2 principals: ambiguous, refused"):
        select_vault_principal(info(), principals)
