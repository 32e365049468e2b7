"""The core stays framework-free, and the webhook path stays light to import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_shared_never_imports_the_functions_framework() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            n for n in _imports(path) if n.startswith(("azure.functions", "azure.durable_functions"))
        )
        for path in (ROOT / "shared").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_shared_never_imports_local_only_packages() -> None:
    local_only = ("emulator", "localrun", "tests", "bench", "call_workflow")
    offenders = {
        str(path.relative_to(ROOT)): sorted(n for n in _imports(path) if n.split(".")[0] in local_only)
        for path in (ROOT / "shared").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_deployed_code_never_imports_test_or_dev_packages() -> None:
    dev_only = ("emulator", "localrun", "tests", "bench", "openai", "standardwebhooks", "pytest", "yaml", "pydantic")
    deployed = [ROOT / "function_app.py", *(ROOT / "call_workflow").rglob("*.py"), *(ROOT / "shared").rglob("*.py")]
    offenders = {
        str(path.relative_to(ROOT)): sorted(n for n in _imports(path) if n.split(".")[0] in dev_only)
        for path in deployed
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_settings_module_imports_without_network_libraries() -> None:
    # The webhook path imports settings first; heavy SDKs must load lazily, not here.
    code = ("import sys, shared.settings; "
            "print(','.join(m for m in ('httpx','websockets','azure.identity','azure.data.tables') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
