"""client_secret_basic (issue 13 item 7) cannot be bent into another credential.

Only a ``cbk_`` client secret is read from ``Authorization: Basic``: a JWT or Vault token
sent as the Basic password is no credential at all (they have their own schemes), a
malformed header is none, and the client id must name the secret's owner (the integration
test drives that end to end with authlib).
"""

from __future__ import annotations

import base64
from urllib.parse import quote_plus

import pytest

from broker.service.credentials import basic_credential, new_client_secret


def basic(client_id: str, secret: str) -> str:
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def test_a_client_key_is_read_with_its_client_id() -> None:
    secret = new_client_secret()
    assert basic_credential(basic("git-gateway", secret)) == ("git-gateway", secret)


@pytest.mark.parametrize(
    "password",
    [
        "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln",  # a JWT: never via Basic
        "hvs.CAESIJ0123456789abcdefghijklmnopqrstuvwxyzABCDEF",  # a Vault token: never via Basic
        "cbk_short",
        "",
    ],
)
def test_a_basic_password_that_is_not_a_client_key_is_no_credential(password: str) -> None:
    assert basic_credential(basic("reviewer", password)) is None


@pytest.mark.parametrize(
    "header",
    ["Basic", "Basic !!!!", "Basic " + base64.b64encode(b"no-colon").decode(), "Basic " + "A" * 2000, "Bearer x"],
)
def test_a_malformed_basic_header_is_no_credential(header: str) -> None:
    assert basic_credential(header) is None


def test_an_empty_or_huge_client_id_is_no_credential() -> None:
    secret = new_client_secret()
    assert basic_credential(basic("", secret)) is None
    assert basic_credential(basic("x" * 129, secret)) is None
