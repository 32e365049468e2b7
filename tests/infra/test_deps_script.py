"""scripts/deps.sh, which `make demo`, `make up` and `make test` install through: it says what it does and how long
it took, and a failed pip install fails the make target (pip's output goes through a filter; the filter must not
swallow pip's exit code)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def deps(tmp_path: Path, requirements: str) -> subprocess.CompletedProcess[str]:
    req = tmp_path / "requirements-test.txt"
    req.write_text(requirements)
    env = {**os.environ, "VENV": str(tmp_path / "venv"), "PYTHON": sys.executable}
    return subprocess.run(["bash", str(ROOT / "scripts" / "deps.sh"), "python", str(req)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)


def test_each_phase_is_a_line_with_its_time_and_a_failed_install_fails(tmp_path: Path) -> None:
    # pip is in every new venv: "already satisfied", so nothing is fetched and its line is left out.
    first = deps(tmp_path, "pip\n")
    assert first.returncode == 0, first.stdout + first.stderr
    lines = first.stdout.splitlines()
    assert re.fullmatch(rf"\[deps +\d+s\] creating {re.escape(str(tmp_path / 'venv'))} with Python 3\.\d+\.\d+",
                        lines[0]), lines
    assert re.fullmatch(r"\[deps +\d+s\] pip install -r \S+requirements-test.txt into \S+ \.\.\.", lines[1]), lines
    assert re.fullmatch(r"\[deps +\d+s\] python packages of \S+requirements-test.txt ready", lines[-1]), lines
    assert not any("Requirement already satisfied" in line for line in lines), lines

    broken = deps(tmp_path, "this is not a requirement !!\n")  # pip refuses it before any download
    assert broken.returncode != 0, broken.stdout
    assert "creating" not in broken.stdout  # the venv is there now
    assert "Invalid requirement" in broken.stdout, broken.stdout  # pip's own message, shown (indented)
    assert "ready" not in broken.stdout
