"""pytest helpers for other test folders.

    # conftest.py
    from emulator.testing import emulator_factory, emulator  # noqa: F401  (re-export the fixtures)

    async def test_x(emulator):                 # a started Emulator on ephemeral ports, SIP disabled
        call_id = await emulator.place_call("demo")

    async def test_y(emulator_factory):         # custom config; every emulator is stopped at teardown
        emu = await emulator_factory(webhook_url="http://127.0.0.1:7071/api/calls/incoming", sip_port=0)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest_asyncio

from .config import EmulatorConfig
from .server import Emulator
from .webhooks import new_secret

TEST_API_KEY = "test-key"


def test_config(**overrides: Any) -> EmulatorConfig:
    """Fast defaults for tests: ephemeral HTTP port, no SIP, instant speech, short retries."""
    base: dict[str, Any] = dict(
        host="127.0.0.1", http_port=0, sip_port=None, api_key=TEST_API_KEY, webhook_secret=new_secret(),
        speech_seconds_per_char=0.0, caller_step_delay_s=0.02, webhook_backoff_s=(0.05, 0.1, 0.2),
        webhook_timeout_s=2.0, refer_end_delay_s=0.1, ring_timeout_s=5.0,
    )
    base.update(overrides)
    return EmulatorConfig(**base)


@pytest_asyncio.fixture
async def emulator_factory() -> AsyncIterator[Callable[..., Awaitable[Emulator]]]:
    started: list[Emulator] = []

    async def make(**overrides: Any) -> Emulator:
        emu = Emulator(test_config(**overrides))
        await emu.start()
        started.append(emu)
        return emu

    yield make
    for emu in started:
        await emu.stop()


@pytest_asyncio.fixture
async def emulator(emulator_factory: Callable[..., Awaitable[Emulator]]) -> Emulator:
    return await emulator_factory()
