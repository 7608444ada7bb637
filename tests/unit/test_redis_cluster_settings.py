"""The ``redis+cluster://`` URL and what changes with it: parsing, the settings' checks, the
names a deployment's settings give (tagged only on a cluster) and the start-up verdict on
a cluster node reached by a plain URL or a cluster's several primaries."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.backends.redis_durability import RedisConfig, Verdict, combined, durability_verdict
from broker.config import Settings, SettingsError, load_settings
from broker.verify.redis_options import parse_cluster_url

AOF = RedisConfig("yes", "everysec", "", "noeviction")
NODE = RedisConfig("yes", "everysec", "", "noeviction", cluster_enabled="yes")

BASE = """\
issuer: https://broker.internal
scopes: /etc/capbroker/scopes
admin_key_sha256: [aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]
vault_addr: https://vault.internal:8200
"""


def settings(tmp_path: Path, url: str, extra: str = "") -> Settings:
    path = tmp_path / "broker.yaml"
    path.write_text(BASE + f"redis_url: {url}\n" + extra)
    return load_settings(path, {"BROKER_VAULT_TOKEN": "t"})


def test_a_cluster_url_lists_its_nodes_and_credentials() -> None:
    parsed = parse_cluster_url("redis+cluster://user:p%40ss@10.0.0.1:7000,[::1]:7001")
    assert parsed.nodes == (("10.0.0.1", 7000), ("::1", 7001))
    assert (parsed.username, parsed.password) == ("user", "p@ss")
    assert "p@ss" not in repr(parsed)


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://",
        "redis+cluster://host",
        "redis+cluster://h:0",
        "redis+cluster://h:1/2",
        "redis+cluster://h:1?x=1",
    ],
)
def test_a_malformed_cluster_url_is_refused_by_the_settings(tmp_path: Path, url: str) -> None:
    with pytest.raises(SettingsError, match=r"redis_url: a redis\+cluster:// URL"):
        settings(tmp_path, url)


def test_on_a_cluster_the_state_and_the_stream_are_tagged(tmp_path: Path) -> None:
    cluster = settings(tmp_path, "redis+cluster://r1:7000,r2:7000", 'redis_prefix: "cb:prod:"\n')
    assert (cluster.state_prefix, cluster.stream) == ("{cb:prod:}", "{cb:prod:audit}")
    single = settings(tmp_path, "redis://r1:6379/0", 'redis_prefix: "cb:prod:"\n')
    assert (single.state_prefix, single.stream) == ("cb:prod:", "cb:prod:audit")


def test_a_cluster_node_on_a_plain_url_is_refused_whatever_is_asserted() -> None:
    for mode in ("checked", "accept-volatile"):
        refusal = durability_verdict(mode, NODE).refusal
        assert refusal is not None
        assert "redis+cluster://" in refusal
    assert durability_verdict("checked", NODE, cluster_url=True) == Verdict(None)


def test_every_primary_of_a_cluster_is_judged_and_the_first_refusal_wins() -> None:
    evicting = RedisConfig("yes", "everysec", "", "allkeys-lru", cluster_enabled="yes")
    rdb_only = RedisConfig("no", "everysec", "3600 1", "noeviction", cluster_enabled="yes")
    verdicts = [durability_verdict("checked", c, cluster_url=True) for c in (NODE, rdb_only, evicting, rdb_only)]
    assert combined(verdicts).refusal is not None
    assert "allkeys-lru" in str(combined(verdicts).refusal)
    warned = combined(verdicts[:2] + verdicts[3:])
    assert warned.refusal is None
    assert len(warned.warnings) == 1  # the same warning from two primaries, said once
    assert combined([durability_verdict("checked", AOF)]) == Verdict(None)
