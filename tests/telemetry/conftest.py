"""A full local call in this process: the real app (function_app) under the local runner, the emulator over real
sockets, Azurite, and the OpenTelemetry SDK with in-memory exporters, plus a capture of every log record."""

from __future__ import annotations

import asyncio
import copy
import importlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from emulator.testing import emulator_factory  # noqa: F401  (fixture)
from localrun.demo import take_call_records
from localrun.host import HostConfig, LocalHost
from localrun.stack import free_port
from localrun.telemetry import Memory, memory
from shared import telemetry

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "telemetry-api-key-0f3c9a"
CALLER = "+14255551212"
DENIED = "+19005557788"
DIALED = "+18005551212"


class Capture(logging.Handler):
    """Keeps every record at INFO and above (what App Insights gets with the host's default level)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class LocalCall:
    host: LocalHost
    emulator: Any
    memory: Memory
    logs: Capture
    connection_string: str
    queue: str
    secrets: list[str] = field(default_factory=list)

    async def record(self, call_id: str, timeout: float = 30.0) -> dict:
        found = await asyncio.to_thread(take_call_records, self.connection_string, self.queue, [call_id],
                                        timeout=timeout)
        return found[call_id]

    async def spans_until(self, call_id: str, name: str, timeout: float = 15.0) -> list:
        """Every finished span of the call's trace once a span ``name`` of it has ended."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            spans = self.memory.spans()
            mine = [s for s in spans if (s.attributes or {}).get(telemetry.CALL_ID) == call_id]
            trace_ids = {s.context.trace_id for s in mine}
            of_trace = [s for s in spans if s.context.trace_id in trace_ids]
            if any(s.name == name for s in of_trace):
                return of_trace
            if loop.time() > end:
                raise AssertionError(f"no span {name!r} for {call_id}; have {sorted({s.name for s in of_trace})}")
            await asyncio.sleep(0.05)


@pytest.fixture
async def local_call(azurite: str, unique_name: str, emulator_factory, monkeypatch,  # noqa: F811
                     tmp_path: Path) -> AsyncIterator[LocalCall]:
    mem = memory()
    mem.exporter.clear()
    capture = Capture()
    root = logging.getLogger()
    root.addHandler(capture)
    switchboard = logging.getLogger("switchboard")
    old_level = switchboard.level
    switchboard.setLevel(logging.INFO)  # setLevel, not the attribute: it clears the loggers' level caches
    telemetry.install_log_filter()

    port = free_port()
    emu = await emulator_factory(webhook_url=f"http://127.0.0.1:{port}/api/calls/incoming", api_key=API_KEY,
                                 speech_seconds_per_char=0.001)
    rules = json.loads((ROOT / "routing.json").read_text())
    rules = {**copy.deepcopy(rules), "callers": {"deny": ["+1900"]}}
    rules_path = tmp_path / "routing.json"
    rules_path.write_text(json.dumps(rules))
    queue = unique_name
    env = {
        "AZURE_OPENAI_ENDPOINT": f"http://127.0.0.1:{emu.http_port}",
        "AZURE_OPENAI_AUTH": "api-key",
        "AZURE_OPENAI_API_KEY": API_KEY,
        "AZURE_OPENAI_DEPLOYMENT": "gpt-realtime",
        "WEBHOOK_SECRET": emu.config.webhook_secret,
        "CALL_STORAGE_CONNECTION_STRING": azurite,
        "CALL_RECORDS_QUEUE": queue,
        "CALL_TURNS_TABLE": "t" + unique_name[1:],
        "ROUTING_RULES_PATH": str(rules_path),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("APPLICATIONINSIGHTS_CONNECTION_STRING", raising=False)

    from call_workflow import runtime

    runtime.reset()
    app = importlib.import_module("function_app").app
    host = LocalHost(HostConfig(app_dir=str(ROOT), port=port, load_local_settings=False,
                                function_key="fkey", master_key="mkey"), app=app)
    await host.start()
    account_key = azurite.split("AccountKey=")[1].split(";")[0]
    try:
        yield LocalCall(host, emu, mem, capture, azurite, queue,
                        secrets=[API_KEY, emu.config.webhook_secret, account_key])
    finally:
        await host.stop()
        await runtime.drain_declined()
        rt = runtime._per_loop.get(asyncio.get_running_loop())
        if rt is not None:
            await rt.aclose()
        runtime.reset()
        root.removeHandler(capture)
        switchboard.setLevel(old_level)
