"""``vault_addr``: one Vault/OpenBao address, or every node of an HA cluster, comma-separated.

``http://bao-0:8200,http://bao-1:8200,http://bao-2:8200`` lists the nodes of an
integrated-Raft cluster; the broker and the gateway send each request to the node that
answered last and move on to the next only when a request was not performed
(``broker.backends.vault_failover``). Pure: parsing and validation only.

Each address is an ``http://`` or ``https://`` URL with a host, an optional port and an
optional path prefix (a proxy's), and nothing else: no user or password, query or
fragment. All use one scheme (the TLS settings, ``vault_ca_file`` and the client
certificate, apply to every node); none is listed twice. Trailing slashes are dropped.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

__all__ = ["MAX_NODES", "VaultAddrError", "first_addr", "parse_vault_addrs"]

#: more nodes than any Raft cluster runs (3 or 5 voters, a few non-voters)
MAX_NODES: Final = 9


class VaultAddrError(ValueError):
    """The ``vault_addr`` value is not a list of usable addresses (the message says why)."""


def parse_vault_addrs(value: str) -> tuple[str, ...]:
    """The nodes of ``value`` in their listed order, each without a trailing slash."""
    parts = [part.strip() for part in value.split(",")]
    if not value.strip() or any(not part for part in parts):
        raise VaultAddrError("vault_addr: an empty address (a list is comma-separated, with no empty entries)")
    if len(parts) > MAX_NODES:
        raise VaultAddrError(f"vault_addr: more than {MAX_NODES} nodes")
    nodes = tuple(_node(part) for part in parts)
    if len({urlsplit(node).scheme for node in nodes}) > 1:
        raise VaultAddrError("vault_addr: every node uses the same scheme (all https, or all http)")
    if len(set(nodes)) != len(nodes):
        raise VaultAddrError("vault_addr: a node is listed twice")
    return nodes


def first_addr(value: str) -> str:
    """The first listed node: the base URL clients are built with before requests are
    sent to the node that answers (``broker.backends.vault_failover``)."""
    return parse_vault_addrs(value)[0]


def _node(text: str) -> str:
    try:
        url = urlsplit(text)
        port = url.port  # raises on a port out of range or not a number
    except ValueError:
        raise VaultAddrError("vault_addr: an address that is not a URL") from None
    if url.scheme not in ("http", "https") or not url.hostname:
        raise VaultAddrError("vault_addr: each address is an http(s) URL with a host")
    if url.username is not None or url.password is not None or url.query or url.fragment or "@" in url.netloc:
        raise VaultAddrError("vault_addr: an address carries no user, password, query or fragment")
    if any(c.isspace() for c in text) or port == 0:
        raise VaultAddrError("vault_addr: an address with spaces or port 0")
    return text.rstrip("/")
