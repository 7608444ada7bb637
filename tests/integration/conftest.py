"""Session servers: one real redis-server and one real OpenBao dev server on loopback.

Tests that break a server (stop, pause, seal) take ``own_redis`` / ``own_bao`` instead,
fresh instances that only they touch.

``bao_raft``: a 3-node OpenBao Raft cluster (``tests.servers.bao_cluster``), started once
for the session by the first test that asks (the ``ha`` suites). A test that kills a node
brings it back (``bao_raft.heal()``) before it ends, so the next one finds three nodes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.bao_cluster import BaoCluster
from tests.servers.processes import BaoServer, RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def bao_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    server = BaoServer(tmp_path_factory.mktemp("bao")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def bao_raft(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoCluster]:
    cluster = BaoCluster(tmp_path_factory.mktemp("bao-raft"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_bao(tmp_path: Path) -> Iterator[BaoServer]:
    server = BaoServer(tmp_path / "bao").start()
    try:
        yield server
    finally:
        server.stop()
