"""The agent side's pure parts: how long a token is reused, the environment ``broker run``
builds, the broker's problem codes as errors, and the on-disk cache's permissions."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from broker.client import BrokerCallFailed, IssuedToken
from broker.client.calls import broker_base, failure, scope_entry
from broker.client.disk_cache import DiskTokenCache, principal_of
from broker.client.freshness import margin, refresh_at
from broker.client.run_env import git_env, git_include_text, http_env, split

KEY = "cbk_" + "k" * 43


def token(task: str = "t1", *, kind: str = "git", resource: str = "github.com/acme/widgets", aud: str = "git-gateway",
          issued: int = 1000, ttl: int = 300) -> IssuedToken:  # fmt: skip
    cap = {"kind": kind, "resource": resource, "actions": ["read"], "scope": "s"}
    return IssuedToken(task, aud, f"tok-{task}-{aud}-{issued}", f"id-{issued}", issued, issued + ttl, (cap,))


@pytest.mark.parametrize(("ttl", "expected"), [(300, 60), (3600, 60), (60, 15), (90, 22), (4, 1), (2, 1)])
def test_a_token_is_reused_until_a_quarter_of_its_life_at_most_60_s_remains(ttl: int, expected: int) -> None:
    assert margin(0, ttl) == expected
    t = token(ttl=ttl)
    assert t.fresh(refresh_at(t.issued_at, t.expires_at) - 1)
    assert not t.fresh(refresh_at(t.issued_at, t.expires_at))


def test_repr_never_shows_the_token() -> None:
    t = token()
    assert t.token not in repr(t)


def test_git_env_appends_after_the_callers_own_git_config() -> None:
    env = git_env({"GIT_CONFIG_COUNT": "2"}, "http://gw:8800/", ["github.com"], "/p/inc")
    assert env == {
        "GIT_CONFIG_COUNT": "4",
        "GIT_CONFIG_KEY_2": "url.http://gw:8800/git/github.com/.insteadOf",
        "GIT_CONFIG_VALUE_2": "https://github.com/",
        "GIT_CONFIG_KEY_3": "include.path",
        "GIT_CONFIG_VALUE_3": "/p/inc",
    }


def test_the_git_header_is_limited_to_each_hosts_urls_on_the_gateway() -> None:
    parts = split([token(), token("t1", resource="gitlab.example/a/b", aud="gl")])
    text = git_include_text("http://gw:8800", parts.git)
    assert (
        '[http "http://gw:8800/git/github.com/"]\n\textraHeader = Authorization: Bearer tok-t1-git-gateway-1000\n'
        in text
    )
    assert '[http "http://gw:8800/git/gitlab.example/"]' in text
    with pytest.raises(ValueError, match="two tokens for git host"):
        split([token(), token(aud="other")])


def test_http_env_names_the_token_only_when_there_is_exactly_one() -> None:
    one = token(kind="http", resource="https://api.x/v1/", aud="api")
    assert http_env("http://gw/", [one], "/d") == {
        "CAPBROKER_TOKENS_DIR": "/d",
        "CAPBROKER_GATEWAY": "http://gw",
        "CAPBROKER_TOKEN": one.token,
        "CAPBROKER_TOKEN_FILE": "/d/api.token",
    }
    two = [one, token(kind="http", resource="https://b.x/", aud="b")]
    assert "CAPBROKER_TOKEN" not in http_env(None, two, "/d")


def test_a_problem_becomes_an_error_with_the_brokers_code() -> None:
    error = failure(429, {"retry-after": "3", "x-request-id": "r-1"}, b'{"code": "rate_limited", "status": 429}')
    assert isinstance(error, BrokerCallFailed)
    assert (error.code, error.status, error.request_id, error.retry_after) == ("rate_limited", 429, "r-1", 3.0)
    odd = failure(502, {"x-request-id": "bad id!"}, b"<html>")
    assert (odd.code, odd.request_id) == ("http_error", None)


def test_credentials_go_over_https_or_loopback_only() -> None:
    assert broker_base("http://127.0.0.1:8700/") == "http://127.0.0.1:8700"
    assert broker_base("https://broker.internal") == "https://broker.internal"
    with pytest.raises(ValueError, match="https"):
        broker_base("http://broker.internal")


def test_a_narrowed_scope_entry() -> None:
    assert scope_entry("s", None, None) == "s"
    assert scope_entry("s", "r", "GET") == {"scope": "s", "resource": "r", "actions": ["GET"]}


def test_the_disk_cache_is_private_and_keyed_by_principal(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    mine = DiskTokenCache("http://b", KEY, directory)
    t = token()
    mine.put(("t1", "s", None, None), t)

    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    (entry,) = directory.iterdir()
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert mine.get(("t1", "s", None, None), 1100) == t
    assert mine.get(("t1", "s", None, None), refresh_at(t.issued_at, t.expires_at)) is None, "stale, and dropped"
    assert not list(directory.iterdir())
    mine.put(("t1", "s", None, None), t)
    assert DiskTokenCache("http://b", KEY + "x", directory).get(("t1", "s", None, None), 1100) is None
    assert DiskTokenCache("http://other", KEY, directory).get(("t1", "s", None, None), 1100) is None


def test_a_readable_cache_file_is_never_used(tmp_path: Path) -> None:
    cache = DiskTokenCache("http://b", KEY, tmp_path / "c")
    cache.put(("t1", "s", None, None), token())
    (entry,) = (tmp_path / "c").iterdir()
    entry.chmod(0o644)

    assert cache.get(("t1", "s", None, None), 1100) is None
    assert not entry.exists()


def test_a_shared_cache_directory_is_made_private_first(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    directory.mkdir(mode=0o777)
    os.chmod(directory, 0o777)  # noqa: S103 -- the shared directory under test
    assert DiskTokenCache("http://b", KEY, directory).usable
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_a_symlinked_cache_file_is_not_followed(tmp_path: Path) -> None:
    cache = DiskTokenCache("http://b", KEY, tmp_path / "c")
    cache.put(("t1", "s", None, None), token())
    (entry,) = (tmp_path / "c").iterdir()
    target = tmp_path / "elsewhere.json"
    entry.rename(target)
    entry.symlink_to(target)
    assert cache.get(("t1", "s", None, None), 1100) is None


def test_an_identity_jwt_is_named_by_issuer_and_subject_not_by_itself() -> None:

    def jwt(jti: str) -> str:
        claims = {"iss": "https://issuer", "sub": "repo:acme/w", "jti": jti}
        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
        return f"eyJhbGciOiJFUzI1NiJ9.{payload}.sig"

    assert principal_of(jwt("a")) == principal_of(jwt("b")) == "jwt:https://issuer|repo:acme/w"
    assert principal_of(KEY).startswith("sha256:")
    assert KEY not in principal_of(KEY)
