"""``vault_addr`` as one address or a comma-separated list of an HA cluster's nodes."""

from __future__ import annotations

import pytest

from broker.vault_addrs import MAX_NODES, VaultAddrError, first_addr, parse_vault_addrs


def test_one_address_is_a_list_of_one() -> None:
    assert parse_vault_addrs("https://vault.internal:8200/") == ("https://vault.internal:8200",)


def test_the_nodes_keep_their_order_without_spaces_or_trailing_slashes() -> None:
    nodes = parse_vault_addrs(" http://bao-0:8200, http://bao-1:8200/ ,http://bao-2:8200")
    assert nodes == ("http://bao-0:8200", "http://bao-1:8200", "http://bao-2:8200")
    assert first_addr("http://bao-1:8200,http://bao-0:8200") == "http://bao-1:8200"


def test_a_path_prefix_is_kept() -> None:
    assert parse_vault_addrs("https://proxy.internal/vault/") == ("https://proxy.internal/vault",)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "empty"),
        ("http://a:8200,", "empty"),
        ("http://a:8200,,http://b:8200", "empty"),
        ("vault.internal:8200", "http(s) URL"),
        ("ftp://a", "http(s) URL"),
        ("http://", "http(s) URL"),
        ("http://a:99999", "not a URL"),
        ("http://a:port", "not a URL"),
        ("http://user:pw@a:8200", "no user"),
        ("http://a:8200/?x=1", "no user"),
        ("http://a:8200/#f", "no user"),
        ("http://a:8200,https://b:8200", "same scheme"),
        ("http://a:8200,http://a:8200/", "listed twice"),
        ("http://a:0", "port 0"),
        ("http://a:8200/x y", "spaces"),
        (",".join(f"http://n{i}:8200" for i in range(MAX_NODES + 1)), f"more than {MAX_NODES}"),
    ],
)
def test_a_bad_list_is_refused_with_the_reason(value: str, why: str) -> None:
    with pytest.raises(VaultAddrError, match="^vault_addr: .*" + why.replace("(", r"\(").replace(")", r"\)")):
        parse_vault_addrs(value)
