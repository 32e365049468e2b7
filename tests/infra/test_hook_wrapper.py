"""scripts/hook.sh: the azd hooks' interpreter picker, run by a real `sh` with controlled PATHs.

Stock macOS and Debian/Ubuntu have no `python` command, so a hook that ran `python …` stopped `azd up` after
provisioning. The wrapper takes .venv/bin/python, else python3, else python, checks the hook's imports and fails
with a one-line install hint.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

WRAPPER = ROOT / "scripts" / "hook.sh"
PROBE = "import sys; print(sys.executable)"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A checkout with the wrapper and no .venv; the hook it runs prints the interpreter's path."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(WRAPPER, tmp_path / "scripts" / "hook.sh")
    (tmp_path / "scripts" / "probe.py").write_text(PROBE + "\nprint('args', sys.argv[1:])\n")
    return tmp_path


def bin_dir(tmp_path: Path, **pythons: str) -> Path:
    """A PATH folder with the tools the wrapper uses and the given python commands (name -> shell body)."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    for tool in ("dirname",):
        os.symlink(shutil.which(tool), folder / tool)
    for name, body in pythons.items():
        script = folder / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    return folder


def run(checkout: Path, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", str(checkout / "scripts" / "hook.sh"), "scripts/probe.py", "--x", "a b"],
                          cwd="/", env={"PATH": str(path)}, capture_output=True, text=True, timeout=60)


def test_no_python_at_all_fails_with_a_one_line_hint(checkout: Path, tmp_path: Path) -> None:
    result = run(checkout, bin_dir(tmp_path))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "no Python found" in result.stderr
    assert "pip install -r requirements.txt" in result.stderr


def test_python3_without_the_packages_fails_naming_them(checkout: Path, tmp_path: Path) -> None:
    # A real interpreter without site-packages, as a fresh system Python is.
    bare = bin_dir(tmp_path, python3=f'exec "{sys.executable}" -S -I "$@"')
    result = run(checkout, bare)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "cannot import httpx and azure.identity" in result.stderr
    assert "python3 -m pip install -r requirements.txt" in result.stderr


def test_python3_is_used_when_there_is_no_python_command(checkout: Path, tmp_path: Path) -> None:
    path = bin_dir(tmp_path, python3=f'exec "{sys.executable}" "$@"')
    result = run(checkout, path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [sys.executable, "args ['--x', 'a b']"]  # arguments pass through intact


def test_python_is_the_last_resort(checkout: Path, tmp_path: Path) -> None:
    path = bin_dir(tmp_path, python=f'exec "{sys.executable}" "$@"')
    assert run(checkout, path).returncode == 0


def test_the_checkouts_venv_comes_first(checkout: Path, tmp_path: Path) -> None:
    venv_python = checkout / ".venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text(f'#!/bin/sh\necho venv >&2\nexec "{sys.executable}" "$@"\n')
    venv_python.chmod(0o755)
    # python3 on PATH lacks the packages: had the wrapper taken it, the import check would fail.
    path = bin_dir(tmp_path, python3=f'exec "{sys.executable}" -S -I "$@"')
    result = run(checkout, path)
    assert result.returncode == 0, result.stderr
    assert "venv" in result.stderr


def test_the_hook_scripts_exit_code_is_the_wrappers(checkout: Path, tmp_path: Path) -> None:
    (checkout / "scripts" / "probe.py").write_text("import sys; sys.exit(3)\n")
    path = bin_dir(tmp_path, python3=f'exec "{sys.executable}" "$@"')
    assert run(checkout, path).returncode == 3
