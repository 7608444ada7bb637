"""Is a Redis fit to hold revocations? The pure decision at ``broker serve``'s start, and
the ``redis_durability`` setting. On real redis-server processes:
tests/integration/test_redis_durability.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.backends.redis_durability import DURABILITY_MODES, RedisConfig, durability_verdict
from broker.config import SettingsError, load_settings

AOF = RedisConfig(appendonly="yes", appendfsync="everysec", save="", maxmemory_policy="noeviction")
RDB = RedisConfig(
    appendonly="no", appendfsync="everysec", save="3600 1 300 100 60 10000", maxmemory_policy="noeviction"
)
VOLATILE = RedisConfig(appendonly="no", appendfsync="everysec", save="", maxmemory_policy="noeviction")


def test_aof_with_noeviction_starts_quietly() -> None:
    for mode in DURABILITY_MODES:
        assert durability_verdict(mode, AOF).refusal is None
        assert durability_verdict(mode, AOF).warnings == ()


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-lru", "allkeys-random", "volatile-ttl", "allkeys-lfu"])
@pytest.mark.parametrize("mode", DURABILITY_MODES)
def test_an_evicting_redis_is_refused_whatever_is_asserted(policy: str, mode: str) -> None:
    """Facts win: a CONFIG that answers is checked, an assertion never overrides it."""
    verdict = durability_verdict(mode, RedisConfig("yes", "everysec", "", policy))
    assert verdict.refusal is not None
    assert "maxmemory-policy" in verdict.refusal
    assert repr(policy) in verdict.refusal


def test_a_redis_that_keeps_nothing_on_disk_is_refused_by_default() -> None:
    for mode in ("checked", "asserted-aof", "asserted-rdb"):
        verdict = durability_verdict(mode, VOLATILE)
        assert verdict.refusal is not None
        assert "appendonly 'no'" in verdict.refusal
        assert "save ''" in verdict.refusal
        assert "accept-volatile" in verdict.refusal


def test_a_redis_that_keeps_nothing_on_disk_is_accepted_only_when_said_with_a_warning() -> None:
    verdict = durability_verdict("accept-volatile", VOLATILE)
    assert verdict.refusal is None
    (warning,) = verdict.warnings
    assert "restart forgets all revocations" in warning
    assert "accept-volatile" in warning


def test_rdb_snapshots_only_start_with_a_warning() -> None:
    verdict = durability_verdict("checked", RDB)
    assert verdict.refusal is None
    (warning,) = verdict.warnings
    assert "since the last snapshot" in warning


def test_aof_without_fsync_starts_with_a_warning() -> None:
    verdict = durability_verdict("checked", RedisConfig("yes", "no", "", "noeviction"))
    assert verdict.refusal is None
    (warning,) = verdict.warnings
    assert "appendfsync is 'no'" in warning


def test_without_config_the_operator_must_assert() -> None:
    for mode in ("checked", "accept-volatile"):
        verdict = durability_verdict(mode, None)
        assert verdict.refusal is not None
        assert "CONFIG is unavailable" in verdict.refusal
        assert "asserted-aof" in verdict.refusal
    assert durability_verdict("asserted-aof", None) == durability_verdict("checked", AOF)
    rdb = durability_verdict("asserted-rdb", None)
    assert rdb.refusal is None
    assert len(rdb.warnings) == 1


def test_an_unknown_mode_is_refused_never_allowed() -> None:
    assert durability_verdict("trust-me", AOF).refusal is not None
    assert durability_verdict("trust-me", None).refusal is not None


# ------------------------------------------------------------------ the setting

BASE = """\
issuer: https://broker.internal
scopes: /etc/capbroker/scopes
admin_key_sha256: [aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]
vault_addr: https://vault.internal:8200
redis_url: redis://redis.internal:6379/0
"""


def settings_file(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "broker.yaml"
    path.write_text(BASE + extra)
    return path


def test_the_setting_defaults_to_checked(tmp_path: Path) -> None:
    assert load_settings(settings_file(tmp_path), {"BROKER_VAULT_TOKEN": "t"}).redis_durability == "checked"


@pytest.mark.parametrize("mode", DURABILITY_MODES)
def test_the_setting_takes_each_mode_from_the_file_or_the_environment(tmp_path: Path, mode: str) -> None:
    from_file = load_settings(settings_file(tmp_path, f"redis_durability: {mode}\n"), {"BROKER_VAULT_TOKEN": "t"})
    assert from_file.redis_durability == mode
    env = {"BROKER_VAULT_TOKEN": "t", "BROKER_REDIS_DURABILITY": mode}
    assert load_settings(settings_file(tmp_path), env).redis_durability == mode


@pytest.mark.parametrize("bad", ["none", "asserted", "Checked", "aof"])
def test_the_setting_refuses_anything_else(tmp_path: Path, bad: str) -> None:
    with pytest.raises(SettingsError, match="redis_durability"):
        load_settings(settings_file(tmp_path, f"redis_durability: {bad}\n"), {"BROKER_VAULT_TOKEN": "t"})
