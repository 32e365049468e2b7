"""`python -m localrun` serving the real function_app.py as a separate process, as `make up` runs it: for tests
that need the process itself (its memory, its log output, its listening sockets)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from localrun.stack import free_port

ROOT = Path(__file__).resolve().parents[2]
FUNCTION_KEY = "fkey-runner-process"
MASTER_KEY = "mkey-runner-process"


def example_settings() -> dict[str, str]:
    """The Values of local.settings.example.json: what a developer's first `make up` runs with."""
    values = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    return {k: str(v) for k, v in values.items()}


class RunnerProcess:
    def __init__(self, env: dict[str, str] | None = None, args: list[str] | None = None) -> None:
        self.port = free_port()
        full_env = {**os.environ, **example_settings(), "LOCALRUN_FUNCTION_KEY": FUNCTION_KEY,
                    "LOCALRUN_MASTER_KEY": MASTER_KEY, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "localrun", "--app", "function_app:app", "--app-dir", str(ROOT),
             "--port", str(self.port), "--no-local-settings", *(args or [])],
            cwd=ROOT, env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="backslashreplace")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._wait_ready()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("the runner exited:\n" + "\n".join(self.lines[-40:]))
            try:
                with urllib.request.urlopen(f"{self.base_url}/admin/host/ping", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("the runner did not answer its ping:\n" + "\n".join(self.lines[-40:]))

    def wait_for_line(self, needle: str, timeout: float = 30, start: int = 0) -> str:
        """The first output line from index `start` on that contains `needle`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[start:]:
                if needle in line:
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no log line containing {needle!r}:\n" + "\n".join(self.lines[-40:]))

    def _status_kib(self, field: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} in /proc/{self.proc.pid}/status")

    def rss_mib(self) -> float:
        return self._status_kib("VmRSS") / 1024

    def peak_rss_mib(self) -> float:
        """The most memory the process ever held resident (the kernel's high-water mark)."""
        return self._status_kib("VmHWM") / 1024

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
