"""Fixtures of the engine tests: the real emulator (over real sockets) and a real Azurite.

Azurite: these tests start their own on free ports instead of using ``azurite_connection_string`` of
tests/conftest.py, for two reasons found while writing them (reported to the lead):
- that connection string carries an account key Azurite does not know (403 AuthorizationFailure);
- its teardown waits 10 s for Azurite to exit after SIGTERM and then errors (Azurite keeps serving while
  keep-alive connections are open); here a kill follows a short grace.
Several engineers run suites side by side in this checkout, so fixed ports 10000-10002 come and go under us.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from emulator.testing import emulator, emulator_factory  # noqa: F401  (fixtures)
from shared.records import RecordPublisher
from shared.turns import TurnStore

ROOT = Path(__file__).resolve().parents[2]
# Azurite's well-known devstoreaccount1 key (node_modules/azurite/dist/src/common/utils/constants.js).
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def storage_connection_string() -> Iterator[str]:
    binary = ROOT / "node_modules" / ".bin" / "azurite"
    if not binary.exists():
        pytest.fail("Azurite is not installed: run `npm ci`")
    queue_port, table_port = _free_port(), _free_port()
    location = tempfile.mkdtemp(prefix="azurite-engine-")
    proc = subprocess.Popen(
        [str(binary), "--silent", "--location", location, "--skipApiVersionCheck", "--loose",
         "--queueHost", "127.0.0.1", "--queuePort", str(queue_port),
         "--tableHost", "127.0.0.1", "--tablePort", str(table_port), "--blobPort", str(_free_port())],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not (_listening(queue_port) and _listening(table_port)):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("Azurite did not start")
            time.sleep(0.1)
        yield (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={AZURITE_KEY};"
            f"QueueEndpoint=http://127.0.0.1:{queue_port}/devstoreaccount1;"
            f"TableEndpoint=http://127.0.0.1:{table_port}/devstoreaccount1;"
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        shutil.rmtree(location, ignore_errors=True)


@pytest_asyncio.fixture
async def turn_store(storage_connection_string: str, unique_name: str) -> AsyncIterator[TurnStore]:
    store = TurnStore.from_connection_string(storage_connection_string, unique_name)
    yield store
    await store.aclose()


@pytest_asyncio.fixture
async def publisher(storage_connection_string: str, unique_name: str) -> AsyncIterator[RecordPublisher]:
    pub = RecordPublisher.from_connection_string(storage_connection_string, unique_name)
    yield pub
    await pub.aclose()
