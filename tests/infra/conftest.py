"""Fixtures for the infrastructure tests: parsed Bicep (pycep-parser, the parser checkov uses)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))


@pytest.fixture(scope="session")
def bicep() -> dict[str, dict[str, Any]]:
    """{relative path: parsed document} for every .bicep file. A parse failure fails the test using it."""
    from pycep import BicepParser

    parser = BicepParser()
    return {str(p.relative_to(INFRA)): parser.parse(file_path=p) for p in BICEP_FILES}
