"""Fixtures of the engine tests: the real emulator (over real sockets) and the real Azurite of tests/conftest.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from emulator.testing import emulator, emulator_factory  # noqa: F401  (fixtures)
from shared.records import RecordPublisher
from shared.turns import TurnStore


@pytest.fixture(scope="session")
def storage_connection_string(azurite_connection_string: str) -> str:
    """The Azurite that `make test` runs (or that tests/conftest.py starts for this session)."""
    return azurite_connection_string


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
