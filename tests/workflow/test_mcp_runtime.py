"""MCP header settings on the real runtime (call_workflow/runtime.py): a setting the rules name must be set at
start-up; one that is still an unresolved Key Vault reference keeps the webhook at 503 while everything else runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from call_workflow import runtime
from shared.routing import RoutingRulesError

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def env(azurite: str, unique_name: str, monkeypatch, tmp_path: Path):
    rules = json.loads((ROOT / "routing.json").read_text())
    for profile in rules["profiles"].values():
        profile["mcp_servers"] = [{"label": "crm", "url": "https://crm.example.com/mcp",
                                   "headers": {"Authorization": "CRM_MCP_AUTH"}}]
    rules_path = tmp_path / "routing.json"
    rules_path.write_text(json.dumps(rules))
    for key, value in {
        "AZURE_OPENAI_ENDPOINT": "http://127.0.0.1:9", "AZURE_OPENAI_AUTH": "api-key", "AZURE_OPENAI_API_KEY": "k",
        "AZURE_OPENAI_DEPLOYMENT": "gpt-realtime", "WEBHOOK_SECRET": "whsec_" + "QUJD" * 8,
        "CALL_STORAGE_CONNECTION_STRING": azurite, "CALL_RECORDS_QUEUE": unique_name,
        "CALL_TURNS_TABLE": "t" + unique_name[1:], "ROUTING_RULES_PATH": str(rules_path),
    }.items():
        monkeypatch.setenv(key, value)
    runtime.reset()
    yield monkeypatch
    runtime.reset()


def test_a_header_setting_that_is_not_set_stops_start_up(env):
    env.delenv("CRM_MCP_AUTH", raising=False)
    with pytest.raises(RoutingRulesError, match=r"profiles\.reception\.mcp_servers\[0\]\.headers\.Authorization: "
                                                r"names setting 'CRM_MCP_AUTH', which is not set"):
        runtime.load()


async def test_an_unresolved_key_vault_reference_leaves_the_webhook_unavailable(env):
    env.setenv("CRM_MCP_AUTH", "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/crm)")
    rt = await runtime.get()
    try:
        assert rt.intake is None
        assert rt.webhook_error is not None and rt.webhook_error.setting == "CRM_MCP_AUTH"  # the 503's body names it
        assert "vault.azure.net" not in str(rt.webhook_error)
        assert rt.call_control is not None and rt.publisher is not None  # the other functions still run
    finally:
        await rt.aclose()
    env.setenv("CRM_MCP_AUTH", "Bearer resolved")
    runtime.reset()
    rt = await runtime.get()
    try:
        assert rt.intake is not None and rt.webhook_error is None
    finally:
        await rt.aclose()
