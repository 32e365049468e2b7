""".funcignore: what `func azure functionapp publish` / `azd deploy` leave out of the Flex package."""

from __future__ import annotations

import fnmatch

import pytest

from .conftest import ROOT

MUST_EXCLUDE = [
    ".venv/pyvenv.cfg", "tests/conftest.py", "emulator/server.py", "localrun/host.py", "bench/run.py",
    "node_modules/azurite/package.json", "package.json", "package-lock.json", "Makefile", "README.md",
    "docs/deploy.md", "scripts/register_webhook.py", "infra/main.bicep", ".ci/run.sh", ".git/HEAD",
    ".gitignore", ".github/workflows/ci.yml", "local.settings.json", "azure.yaml", "requirements-dev.txt",
    "requirements-local.txt",
    "pyproject.toml", "shared/__pycache__/x.pyc", "rules.schema.json",
    # Local interpreters and build output under other names than .venv, and every local settings file.
    "venv/bin/python", ".venv-infra/lib/python3.11/site-packages/checkov/__init__.py", ".venv311/pyvenv.cfg",
    "env/lib/python3.11/site-packages/x.py", ".python_packages/lib/site-packages/httpx/__init__.py",
    "local.settings.example.json", "local.settings.prod.json",
]
MUST_KEEP = [
    "function_app.py", "host.json", "requirements.txt", "routing.json", "shared/settings.py",
    "shared/__init__.py", "call_workflow/__init__.py", "call_workflow/activities.py",
]


def patterns() -> list[str]:
    lines = (ROOT / ".funcignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def ignored(path: str, pats: list[str]) -> bool:
    """gitignore semantics for the pattern forms used here (no negation allowed)."""
    parts = path.split("/")
    for pat in pats:
        assert not pat.startswith("!"), "negations make the package contents hard to reason about"
        anchored = pat.startswith("/")
        pat = pat.lstrip("/")
        dir_only = pat.endswith("/")
        pat = pat.rstrip("/")
        if "/" in pat or anchored:
            if fnmatch.fnmatch(path, pat) or (fnmatch.fnmatch("/".join(parts[:pat.count("/") + 1]), pat)):
                return True
            continue
        # any path component (a directory if dir_only) matching the pattern
        candidates = parts[:-1] if dir_only else parts
        if any(fnmatch.fnmatch(c, pat) for c in candidates):
            return True
    return False


@pytest.mark.parametrize("path", MUST_EXCLUDE)
def test_excluded(path: str) -> None:
    assert ignored(path, patterns()), f"{path} would be deployed"


@pytest.mark.parametrize("path", MUST_KEEP)
def test_kept(path: str) -> None:
    assert not ignored(path, patterns()), f"{path} would be left out of the package"


def test_real_tree_keeps_the_app() -> None:
    """Walk the checkout: every file under the deployed folders survives, nothing under tests/ does."""
    pats = patterns()
    for folder in ("shared", "call_workflow"):
        for f in (ROOT / folder).rglob("*.py"):
            rel = f.relative_to(ROOT).as_posix()
            if "__pycache__" not in rel:
                assert not ignored(rel, pats), rel
    for f in (ROOT / "tests").rglob("*.py"):
        assert ignored(f.relative_to(ROOT).as_posix(), pats)
