"""Fixtures for the HTTP tests: a fresh broker per test, and a client with its lifespan run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.service.harness import Harness, make_harness
from tests.service.support import running


@pytest.fixture
def h() -> Harness:
    return make_harness()


@pytest.fixture
def client(h: Harness) -> Iterator[TestClient[Any]]:
    with running(h) as c:
        yield c
