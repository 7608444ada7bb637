"""Attacks on ``POST /v1/tasks/{task}/contain``: one named test each. Containment revokes a
whole task, so a service must not be able to revoke tasks it has no token of its own
audience for, nor another task, nor with a token the broker did not issue or that has
expired."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from broker.backends.local_signer import LocalSigningBackend
from tests.service.harness import Harness, make_harness
from tests.service.support import assert_problem, introspect, minted, post_json, running, token_for

AnyClient = TestClient[Any]
SEEN = {"kind": "git", "resource": "github.com/acme/secrets", "action": "read"}


@pytest.fixture
def h() -> Harness:
    return make_harness()


@pytest.fixture
def client(h: Harness) -> Iterator[AnyClient]:
    with running(h) as c:
        yield c


def contain(client: AnyClient, h: Harness, task: str, token: str, who: str) -> Any:
    return post_json(client, f"/v1/tasks/{task}/contain", {"token": token, **SEEN}, h.auth(who))


def git_token(client: AnyClient, h: Harness, task: str, agent: str = "reviewer") -> str:
    return token_for(minted(client, h, agent, task, ["widgets-read"]), "git-gateway")


def test_a_service_cannot_contain_with_a_token_of_another_services_audience(client: AnyClient, h: Harness) -> None:
    token = git_token(client, h, "t-aud")

    r = contain(client, h, "t-aud", token, "storage-gateway")

    assert_problem(r, 403, "forbidden")
    assert introspect(client, h, "git-gateway", token)["active"] is True


def test_the_path_task_must_be_the_tokens_task(client: AnyClient, h: Harness) -> None:
    token = git_token(client, h, "t-mine")
    victim = git_token(client, h, "t-victim")

    r = contain(client, h, "t-victim", token, "git-gateway")

    assert_problem(r, 403, "forbidden")
    assert introspect(client, h, "git-gateway", victim)["active"] is True
    assert introspect(client, h, "git-gateway", token)["active"] is True


def test_a_forged_token_is_refused(client: AnyClient, h: Harness) -> None:
    token = git_token(client, h, "t-forged")
    head, payload, signature = token.split(".")
    flipped = f"{head}.{payload}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"

    assert_problem(contain(client, h, "t-forged", flipped, "git-gateway"), 400, "invalid_request")
    assert introspect(client, h, "git-gateway", token)["active"] is True


def test_a_token_signed_by_another_key_is_refused(client: AnyClient, h: Harness) -> None:
    other = make_harness(signer=LocalSigningBackend.generate())
    with running(other) as other_client:
        foreign = git_token(other_client, other, "t-foreign")
    mine = git_token(client, h, "t-foreign")

    assert_problem(contain(client, h, "t-foreign", foreign, "git-gateway"), 400, "invalid_request")
    assert introspect(client, h, "git-gateway", mine)["active"] is True


def test_an_expired_token_is_refused(client: AnyClient, h: Harness) -> None:
    token = git_token(client, h, "t-expired")
    h.broker.clock = lambda: time.time() + 3600

    assert_problem(contain(client, h, "t-expired", token, "git-gateway"), 400, "invalid_request")
    h.broker.clock = time.time
    assert introspect(client, h, "git-gateway", token)["active"] is True


def test_containment_revokes_only_the_owners_task_not_another_agents_task_of_that_id(
    client: AnyClient, h: Harness
) -> None:
    token = git_token(client, h, "t-shared", agent="reviewer")
    theirs = token_for(minted(client, h, "deployer", "t-shared", ["widgets-push"]), "git-gateway")

    assert contain(client, h, "t-shared", token, "git-gateway").status_code == 200

    assert introspect(client, h, "git-gateway", token) == {"active": False}
    assert introspect(client, h, "git-gateway", theirs)["active"] is True
