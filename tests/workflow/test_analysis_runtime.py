"""The analyze_call activity's work (call_workflow/runtime.py ``analyze``) on the real runtime: settings from the
environment, the emulator's chat completions endpoint and Azurite's turns table."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from call_workflow import runtime
from emulator.testing import emulator_factory  # noqa: F401  (fixture)
from shared.analysis import AnalysisError
from shared.turns import TurnStore

ROOT = Path(__file__).resolve().parent.parent.parent
SPEC = {"summary": "One sentence.", "success": "Answered.",
        "data": {"type": "object", "properties": {"order": {"type": ["string", "null"]}}, "required": ["order"],
                 "additionalProperties": False}}


@pytest.fixture
async def env(azurite: str, unique_name: str, emulator_factory, monkeypatch, tmp_path: Path):  # noqa: F811
    emu = await emulator_factory()
    rules_path = tmp_path / "routing.json"
    rules_path.write_text((ROOT / "routing.json").read_text())
    table = "t" + unique_name[1:]
    for key, value in {
        "AZURE_OPENAI_ENDPOINT": emu.http_url, "AZURE_OPENAI_AUTH": "api-key",
        "AZURE_OPENAI_API_KEY": emu.config.api_key, "AZURE_OPENAI_DEPLOYMENT": "gpt-realtime",
        "AZURE_OPENAI_ANALYSIS_DEPLOYMENT": "gpt-4.1-mini", "WEBHOOK_SECRET": emu.config.webhook_secret,
        "CALL_STORAGE_CONNECTION_STRING": azurite, "CALL_RECORDS_QUEUE": unique_name, "CALL_TURNS_TABLE": table,
        "ROUTING_RULES_PATH": str(rules_path),
    }.items():
        monkeypatch.setenv(key, value)
    runtime.reset()
    yield emu, azurite, table
    rt = runtime._per_loop.get(asyncio.get_running_loop())
    if rt is not None:
        await rt.aclose()
    runtime.reset()


def call(spec=SPEC) -> dict:
    return {"call_id": "rtc_u1_" + "a" * 32, "caller": "+1425***1212", "dialed": "+1800***1212",
            "profile_name": "reception", "accepted_at": "2026-11-30T06:00:00.000000Z",
            "profile": {"instructions": "x", "greeting": "y", **({"analysis": spec} if spec else {})}}


async def test_without_a_summary_the_transcript_comes_from_the_turns_table(env):
    emu, azurite, table = env
    store = TurnStore.from_connection_string(azurite, table)
    try:
        c = call()
        await store.append_many(c["call_id"], [(1, {"role": "agent", "text": "Hello", "at": "2026-11-30T06:00:01Z"}),
                                               (2, {"role": "caller", "text": "Order 55 please",
                                                    "at": "2026-11-30T06:00:04Z"})])
        result = await runtime.analyze(c, None)
    finally:
        await store.aclose()
    assert result["analysis"]["data"] == {"order": "emulated order"} and result["analysis"]["model"] == "gpt-4.1-mini"
    (request,) = emu.chat.requests
    assert "caller: Order 55 please" in request["messages"][1]["content"]


async def test_a_failing_deployment_raises_for_the_orchestrator(env):
    emu, _, _ = env
    emu.chat.fail = [400]
    with pytest.raises(AnalysisError, match="HTTP 400"):
        await runtime.analyze(call(), {"transcript": [{"role": "caller", "text": "hi"}]})


async def test_analysis_off_or_not_asked_for_is_skipped(env, monkeypatch):
    emu, _, _ = env
    assert (await runtime.analyze(call(spec=None), {"transcript": []}))["analysis"] is None
    monkeypatch.setenv("AZURE_OPENAI_ANALYSIS_DEPLOYMENT", "")
    rt = runtime._per_loop.get(asyncio.get_running_loop())
    if rt is not None:
        await rt.aclose()
    runtime.reset()
    result = await runtime.analyze(call(), {"transcript": []})
    assert result == {"analysis": None, "skipped": "AZURE_OPENAI_ANALYSIS_DEPLOYMENT is empty"}
    assert emu.chat.requests == [] and json.dumps(result)
