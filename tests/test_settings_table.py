"""The README's configuration table and local.settings.example.json list every setting the code reads."""

from __future__ import annotations

import json
from pathlib import Path

from shared.settings import SETTINGS

ROOT = Path(__file__).resolve().parent.parent


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [s.name for s in SETTINGS if f"`{s.name}`" not in readme]
    assert missing == []


def test_local_settings_example_lists_every_setting() -> None:
    values = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    missing = [s.name for s in SETTINGS if s.name not in values]
    assert missing == []
