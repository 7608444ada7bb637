"""The reference docs cover what the code does (issue 13, item 10).

docs/settings.md names every setting the code accepts; docs/api.md every route of the
OpenAPI document and every error code the broker or a verifier answers with; the README
and the docs link only to files that exist in the repository.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from broker.config import _FIELDS, Settings
from broker.errors import TOKEN_REJECTION_CODES
from broker.http.problems import STATUS
from tests.service.harness import make_harness

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_every_setting_the_code_accepts_is_in_the_settings_reference() -> None:
    accepted = set(_FIELDS) | {f.name for f in dataclasses.fields(Settings)}
    text = (DOCS / "settings.md").read_text()
    missing = sorted(name for name in accepted if f"`{name}`" not in text)
    assert not missing, f"docs/settings.md does not document {missing}"


def test_every_route_of_the_openapi_document_is_in_the_api_reference() -> None:
    with TestClient(make_harness().app) as client:
        document: dict[str, Any] = client.get("/schema/openapi.json").json()
    text = (DOCS / "api.md").read_text()
    routes = [f"`{method.upper()} {path}`" for path, ops in document["paths"].items() for method in ops]
    assert len(routes) >= 15
    missing = [route for route in routes if route not in text]
    assert not missing, f"docs/api.md does not document {missing}"


def test_every_error_code_is_in_the_api_reference() -> None:
    text = (DOCS / "api.md").read_text()
    missing = sorted(code for code in (*STATUS, *TOKEN_REJECTION_CODES) if f"`{code}`" not in text)
    assert not missing, f"docs/api.md does not explain {missing}"


@pytest.mark.parametrize("page", ["README.md", "SECURITY.md", *(f"docs/{p.name}" for p in sorted(DOCS.glob("*.md")))])
def test_links_point_at_files_in_the_repository(page: str) -> None:
    source = REPO / page
    for target in _LINK.findall(source.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        assert (source.parent / target).resolve().exists(), f"{page} links {target}, which is not in the repository"
