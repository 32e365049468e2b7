"""Fixtures shared by every test area: the real Azurite storage emulator and webhook secrets."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# One definition of Azurite's well-known account and of a fresh secret, shared with `make up` and the demo.
from localrun.stack import azurite_connection_string as azurite_connection_string_for
from localrun.stack import new_webhook_secret

ROOT = Path(__file__).resolve().parent.parent

def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def azurite() -> Iterator[str]:
    """A running Azurite: the one `make test` started, or one started here for this session."""
    ports = (10000, 10001, 10002)
    if all(_listening(p) for p in ports):
        yield azurite_connection_string_for()
        return
    binary = ROOT / "node_modules" / ".bin" / "azurite"
    if not binary.exists():
        found = shutil.which("azurite")
        if not found:
            pytest.fail("Azurite is not installed: run `npm ci` (make test does this)")
        binary = Path(found)
    location = tempfile.mkdtemp(prefix="azurite-")
    proc = subprocess.Popen(
        [str(binary), "--silent", "--location", location, "--skipApiVersionCheck", "--loose",
         "--blobHost", "127.0.0.1", "--queueHost", "127.0.0.1", "--tableHost", "127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not all(_listening(p) for p in ports):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("Azurite did not start on ports 10000-10002")
            time.sleep(0.1)
        yield azurite_connection_string_for()
    finally:
        proc.send_signal(signal.SIGINT)  # Azurite stops at once on SIGINT, slowly on SIGTERM
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        shutil.rmtree(location, ignore_errors=True)


@pytest.fixture(scope="session")
def azurite_connection_string(azurite: str) -> str:
    """The connection string of the running Azurite (alias of `azurite`)."""
    return azurite


@pytest.fixture
def webhook_secret() -> str:
    return new_webhook_secret()


@pytest.fixture
def unique_name() -> str:
    """A fresh lowercase name for queues/tables so tests sharing one Azurite never see each other's data."""
    return "t" + secrets.token_hex(6)


os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
