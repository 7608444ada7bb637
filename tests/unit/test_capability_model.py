"""Capability: always valid once built; canonical action order; JSON form."""

from __future__ import annotations

import pytest

from broker.capability import Capability
from broker.errors import InvalidRequest

OK = ("bucket", "s3://acme/agents/", ("list", "write"), "reports")


def test_build_orders_actions_canonically() -> None:
    assert Capability.build("bucket", "s3://acme/agents/", ["write", "list"], "reports") == Capability(*OK)


@pytest.mark.parametrize(
    ("kind", "resource", "actions", "scope"),
    [
        ("blob", "s3://acme/agents/", ("list",), "reports"),  # unknown kind
        ("bucket", "s3://acme/../x/", ("list",), "reports"),  # resource grammar
        ("bucket", "s3://acme/agents/", (), "reports"),  # no action
        ("bucket", "s3://acme/agents/", ["list"], "reports"),  # not a tuple
        ("bucket", "s3://acme/agents/", (1,), "reports"),  # not strings
        ("bucket", "s3://acme/agents/", ("list", "list"), "reports"),  # repeated
        ("bucket", "s3://acme/agents/", ("write", "list"), "reports"),  # not canonical order
        ("bucket", "s3://acme/agents/", ("fly",), "reports"),  # not an action of the kind
        ("bucket", "s3://acme/agents/", ("list",), "Reports"),  # scope name grammar
    ],
)
def test_invalid_capabilities_cannot_be_built(kind: str, resource: str, actions: object, scope: str) -> None:
    with pytest.raises(InvalidRequest):
        Capability(kind, resource, actions, scope)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "actions",
    ["list", {"list": 1}, [1], ["list", "list"], None],
)
def test_build_refuses_bad_action_lists(actions: object) -> None:
    with pytest.raises(InvalidRequest):
        Capability.build("bucket", "s3://acme/agents/", actions, "reports")


@pytest.mark.parametrize(
    "value",
    [
        None,
        [],
        {"kind": "bucket", "resource": "s3://acme/agents/", "actions": ["list"]},
        {"kind": "bucket", "resource": "s3://acme/agents/", "actions": ["list"], "scope": "r", "x": 1},
        {"kind": "bucket", "resource": "s3://acme/agents/", "actions": "list", "scope": "r"},
        {"kind": 1, "resource": "s3://acme/agents/", "actions": ["list"], "scope": "r"},
    ],
)
def test_from_json_is_strict(value: object) -> None:
    with pytest.raises(InvalidRequest):
        Capability.from_json(value)


def test_json_round_trip() -> None:
    cap = Capability(*OK)
    assert Capability.from_json(cap.to_json()) == cap
    assert list(cap.to_json()) == ["kind", "resource", "actions", "scope"]


@pytest.mark.parametrize(
    ("kind", "resource"),
    [
        ("bucket", "s3://acme/" + "a/" * 600),  # over 1024 characters
        ("bucket", ""),
        ("http", "https://api.acme.test:0/v1/"),
        ("http", "https://api.acme.test:65536/v1/"),
        ("http", "https://api.acme.test:080/v1/"),
        ("http", "https://api.acme.test:443/v1/"),  # a second spelling of the default port
        ("http", "https://api.acme.test"),  # no path
        ("git", "github.com/acme/widgets/"),  # exact kinds have no subtree
        ("database", "database/creds/role/"),
    ],
)
def test_resource_grammar_edges(kind: str, resource: str) -> None:
    from broker.capability import validate_resource

    with pytest.raises(InvalidRequest):
        validate_resource(kind, resource)


@pytest.mark.parametrize(
    "overrides",
    [{"agent": "Not-A-Name"}, {"audience": "has space"}, {"task": "-x"}, {"capabilities": []}, {"ttl": 0}],
)
def test_issue_claims_refuses_bad_inputs(overrides: dict[str, object]) -> None:
    from tests.helpers import claims

    with pytest.raises(InvalidRequest):
        claims(**overrides)
