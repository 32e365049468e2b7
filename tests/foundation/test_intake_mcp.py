"""MCP servers on the webhook path: the intake's accept carries them as ``type: "mcp"`` tools with the header
values read from settings, while the orchestration input keeps only the setting names (shared/intake.py)."""

from __future__ import annotations

import json

import pytest
from openai.types.realtime import RealtimeSessionCreateRequest

from emulator import Emulator
from emulator.testing import test_config as emulator_config

from .harness import ROOT, make_intake
from .test_intake_emulator import Endpoint, settle

pytestmark = pytest.mark.timeout(30)
TOKEN = "Bearer mcp-secret-value-42"


def rules_with_mcp() -> dict:
    rules = json.loads((ROOT / "routing.json").read_text())
    for profile in rules["profiles"].values():
        profile["mcp_servers"] = [{"label": "orders", "url": "https://mcp.example.com/mcp",
                                   "allowed_tools": ["lookup_order"],
                                   "headers": {"Authorization": "TEST_ORDERS_MCP_AUTH"}}]
    return rules


async def test_accept_carries_mcp_tools_and_the_history_only_the_setting_name(monkeypatch):
    monkeypatch.setenv("TEST_ORDERS_MCP_AUTH", TOKEN)
    endpoint = Endpoint()
    await endpoint.start()
    emu = Emulator(emulator_config(webhook_url=endpoint.url))
    await emu.start()
    try:
        endpoint.intake = make_intake(emu.http_url, (emu.config.webhook_secret,), rules=rules_with_mcp())
        call_id = await emu.place_call("demo")
        assert await emu.wait_for_state(call_id, "accepted") == "accepted"
        await settle(emu, call_id, endpoint, 1)
        body = emu.calls[call_id].accept_body
        (mcp,) = [t for t in body["tools"] if t["type"] == "mcp"]
        assert mcp == {"type": "mcp", "server_label": "orders", "server_url": "https://mcp.example.com/mcp",
                       "require_approval": "never", "allowed_tools": ["lookup_order"],
                       "headers": {"Authorization": TOKEN}}
        RealtimeSessionCreateRequest.model_validate(body)
        [(_, call_input)] = endpoint.workflow.started
        assert call_input["profile"]["mcp_servers"][0]["headers"] == {"Authorization": "TEST_ORDERS_MCP_AUTH"}
        assert "mcp-secret-value" not in json.dumps(call_input)  # Durable history never holds the value
    finally:
        await emu.stop()
        await endpoint.stop()


def test_an_unresolved_key_vault_reference_stops_the_intake_not_the_load(monkeypatch):
    from shared.mcp import McpConfigError

    monkeypatch.setenv("TEST_ORDERS_MCP_AUTH", "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/s/x)")
    with pytest.raises(McpConfigError, match="TEST_ORDERS_MCP_AUTH for header Authorization"):
        make_intake("http://127.0.0.1:9", ("whsec_" + "A" * 32,), rules=rules_with_mcp())
