"""What a request asks for, decided from the path as sent: never normalised."""

from __future__ import annotations

import pytest

from broker.errors import CapabilityDenied
from broker.gateway.config import load_config
from broker.gateway.mapping import split_route, strip_query, target_of
from tests.gateway.test_config import SPEC_EXAMPLE

CONFIG = load_config(SPEC_EXAMPLE)


def target(method: str, path: str, query: str = ""):  # type: ignore[no-untyped-def]
    route, rest = split_route(CONFIG, path)
    return target_of(route, rest, query, method)


@pytest.mark.parametrize(
    ("method", "path", "query", "action", "upstream"),
    [
        (
            "GET",
            "/git/github.com/acme/widgets.git/info/refs",
            "service=git-upload-pack",
            "read",
            "https://github.com/acme/widgets.git/info/refs?service=git-upload-pack",
        ),
        (
            "POST",
            "/git/github.com/acme/widgets.git/git-upload-pack",
            "",
            "read",
            "https://github.com/acme/widgets.git/git-upload-pack",
        ),
        (
            "GET",
            "/git/github.com/acme/widgets/info/refs",
            "service=git-receive-pack",
            "write",
            "https://github.com/acme/widgets/info/refs?service=git-receive-pack",
        ),
        (
            "POST",
            "/git/github.com/acme/widgets.git/git-receive-pack",
            "",
            "write",
            "https://github.com/acme/widgets.git/git-receive-pack",
        ),
    ],
)
def test_git_smart_http(method: str, path: str, query: str, action: str, upstream: str) -> None:
    t = target(method, path, query)
    assert (t.kind, t.resource, t.action, t.upstream_url) == ("git", "github.com/acme/widgets", action, upstream)


@pytest.mark.parametrize(
    ("method", "path", "query"),
    [
        ("GET", "/git/github.com/acme/widgets.git/HEAD", ""),
        ("GET", "/git/github.com/acme/widgets.git/info/refs", ""),
        ("GET", "/git/github.com/acme/widgets.git/info/refs", "service=git-upload-archive"),
        ("GET", "/git/github.com/acme/widgets.git/info/refs", "service=git-upload-pack&x=1"),
        ("POST", "/git/github.com/acme/widgets.git/git-upload-pack", "x=1"),
        ("PUT", "/git/github.com/acme/widgets.git/git-receive-pack", ""),
        ("GET", "/git/github.com/acme/widgets.git/objects/info/packs", ""),
        ("GET", "/git/github.com/acme/../widgets.git/info/refs", "service=git-upload-pack"),
        ("GET", "/git/github.com/acme/%2e%2e/info/refs", "service=git-upload-pack"),
        ("GET", "/git/github.com/acme//widgets.git/info/refs", "service=git-upload-pack"),
        ("GET", "/git/github.com/acme\\widgets.git/info/refs", "service=git-upload-pack"),
        ("GET", "/git/gitlab.com/acme/widgets.git/info/refs", "service=git-upload-pack"),
        ("GET", "/git/github.com/acme", ""),
        ("GET", "/svn/github.com/acme/widgets", ""),
    ],
)
def test_git_refusals(method: str, path: str, query: str) -> None:
    with pytest.raises(CapabilityDenied):
        target(method, path, query)


def test_http_maps_the_method_and_the_path_and_drops_credential_parameters() -> None:
    t = target("POST", "/http/billing.internal/v1/invoices/7", "a=1&api_key=x&API%5Fkey=y&b=2")
    assert (t.kind, t.resource, t.action) == ("http", "https://billing.internal/v1/invoices/7", "POST")
    assert t.upstream_url == "https://billing.internal/v1/invoices/7?a=1&b=2"
    assert target("GET", "/http/billing.internal").resource == "https://billing.internal/"


@pytest.mark.parametrize(
    "path",
    [
        "/http/billing.internal/v1/../admin",
        "/http/billing.internal/v1/%2e%2e/admin",
        "/http/billing.internal/v1/a%2fb",
        "/http/billing.internal/v1//x",
        "/http/billing.internal/v1/./x",
        "/http/billing.internal/v1\\x",
        "/http/billing.internal/v1/x y",
        "/http/Billing.internal/v1/x",
        "/http/billing.internal:443/v1/x",
    ],
)
def test_http_non_canonical_paths_are_refused(path: str) -> None:
    with pytest.raises(CapabilityDenied):
        target("GET", path)


def test_http_methods_outside_the_kind_are_refused() -> None:
    for method in ("TRACE", "CONNECT", "PROPFIND", "get"):
        with pytest.raises(CapabilityDenied):
            target(method, "/http/billing.internal/v1/x")


def test_strip_query_keeps_everything_else_byte_for_byte() -> None:
    assert strip_query("q=a%20b&api_key=1&x", frozenset({"api_key"})) == "q=a%20b&x"
    assert strip_query("", frozenset({"api_key"})) == ""
    assert strip_query("api+key=1&api_key=2", frozenset({"api_key"})) == "api+key=1"
