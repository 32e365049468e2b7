"""README.md and docs/ point only at files the repository holds: every relative link resolves inside the clone, and
no text names a path of one particular machine (a reader's clone has neither)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# Home and work folders of a developer's machine. /tmp/ and system paths are fine (they exist everywhere), and so is
# /home/site/ (the app's folder on the Functions host).
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work/|root/|Users/|home/(?!site/))\S*")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve_inside_the_repository(doc: Path) -> None:
    bad = []
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL (https:, mailto:) or an anchor in the same page
        path = target.split("#", 1)[0]
        resolved = (doc.parent / path).resolve()
        if target.startswith("/") or not resolved.is_relative_to(ROOT) or not resolved.exists():
            bad.append(target)
    assert not bad, f"{doc.name}: links to nothing in the repository: {bad}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_path_of_one_machine(doc: Path) -> None:
    found = MACHINE_PATH.findall(doc.read_text(encoding="utf-8"))
    assert not found, f"{doc.name} names paths outside the repository: {found}"


def test_the_call_states_in_docs_local_md_are_the_codes() -> None:
    """docs/local.md names each `state` the operator API can show, and only those (it once said `talking`)."""
    documented = re.search(r"A call's `state` is one of (.+?)\.\s", (ROOT / "docs" / "local.md").read_text(), re.S)
    assert documented, "docs/local.md no longer lists the call states"
    named = set(re.findall(r"`(\w+)` \(", documented.group(1)))
    code = "".join((ROOT / "call_workflow" / name).read_text() for name in ("orchestrator.py", "operator.py"))
    in_code = set(re.findall(r'"state": "(\w+)"', code)) | set(re.findall(r'^STATE_\w+ = "(\w+)"', code, re.M))
    in_code |= set(re.findall(r'setdefault\("state", "(\w+)"', code))
    assert named == in_code, (named, in_code)
