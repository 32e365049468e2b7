"""A profile's ``mcp_servers``: validated at load, passed on accept as ``type: "mcp"`` tools (shared/mcp.py)."""

from __future__ import annotations

import pytest
from openai.types.realtime import RealtimeSessionCreateRequest

from shared.mcp import McpConfigError, session_tools
from shared.routing import RoutingRulesError, parse_rules

SERVER = {"label": "orders", "url": "https://mcp.example.com/mcp", "allowed_tools": ["lookup_order"],
          "headers": {"Authorization": "ORDERS_MCP_AUTH"}, "require_approval": "never"}


def rules(*servers) -> dict:
    return {"numbers": {"*": "reception"},
            "profiles": {"reception": {"instructions": "You are Alex.", "greeting": "Hello",
                                       "mcp_servers": list(servers)}}}


def load(*servers):
    return parse_rules(rules(*servers), tool_names=[], max_call_duration_seconds=900)


@pytest.fixture(autouse=True)
def auth_setting(monkeypatch):
    monkeypatch.setenv("ORDERS_MCP_AUTH", "Bearer s3cret-token")


def test_valid_servers_round_trip_and_become_session_tools():
    local = {"label": "dev", "url": "http://127.0.0.1:8931/mcp",
             "require_approval": {"never": {"read_only": True}, "always": {"tool_names": ["refund"]}}}
    profile = load(SERVER, local).profiles["reception"]
    assert profile.to_json()["mcp_servers"] == [SERVER, local]
    tools = session_tools(profile.mcp_servers)
    assert tools[0] == {"type": "mcp", "server_label": "orders", "server_url": "https://mcp.example.com/mcp",
                        "require_approval": "never", "allowed_tools": ["lookup_order"],
                        "headers": {"Authorization": "Bearer s3cret-token"}}
    assert tools[1]["require_approval"] == local["require_approval"] and "headers" not in tools[1]
    # The accept body is a valid GA session config, MCP tools included (openai-python's own model).
    body = profile.accept_body("gpt-realtime-1.5", tools)
    parsed = RealtimeSessionCreateRequest.model_validate(body)
    assert [t.type for t in parsed.tools] == ["mcp", "mcp"]
    # The profile (which travels in the orchestration input and history) holds the setting name, never the value.
    assert "s3cret" not in str(profile.to_json())


@pytest.mark.parametrize(("server", "expected"), [
    ({**SERVER, "url": "http://mcp.example.com/mcp"}, "mcp_servers[0].url: must be https"),
    ({**SERVER, "url": "ftp://localhost/mcp"}, "mcp_servers[0].url: must be https"),
    ({**SERVER, "url": "https://user:pw@mcp.example.com/"}, "mcp_servers[0].url: no user info"),
    ({**SERVER, "headers": {"Authorization": "NOT_SET_ANYWHERE"}},
     "mcp_servers[0].headers.Authorization: names setting 'NOT_SET_ANYWHERE', which is not set"),
    ({**SERVER, "headers": {"Authorization": "AZURE_OPENAI_API_KEY"}},
     "mcp_servers[0].headers.Authorization: AZURE_OPENAI_API_KEY is one of Switchboard's own settings"),
    ({**SERVER, "headers": {"Host": "ORDERS_MCP_AUTH"}}, "mcp_servers[0].headers.Host: not a header name"),
    ({**SERVER, "headers": {"Authorization": "Bearer abc"}},
     "mcp_servers[0].headers.Authorization: expected the name of a setting"),
    ({**SERVER, "label": "has space"}, "mcp_servers[0].label"),
    ({**SERVER, "allowed_tools": []}, "mcp_servers[0].allowed_tools: expected a non-empty list"),
    ({**SERVER, "require_approval": "sometimes"}, "mcp_servers[0].require_approval: expected 'never', 'always'"),
    ({**SERVER, "require_approval": {"never": {"read_only": "yes"}}},
     "mcp_servers[0].require_approval.never.read_only: expected true or false"),
    ({**SERVER, "token": "x"}, "mcp_servers[0].token: unknown key"),
    ({"label": "orders"}, "mcp_servers[0].url: is required"),
])
def test_bad_server_is_a_load_error_naming_the_profile(server, expected):
    with pytest.raises(RoutingRulesError) as err:
        load(server)
    assert str(err.value).startswith(f"profiles.reception.{expected}"), str(err.value)
    assert "s3cret" not in str(err.value)


def test_duplicate_labels_are_refused():
    with pytest.raises(RoutingRulesError, match=r"mcp_servers\[1\].label: duplicate label 'orders'"):
        load(SERVER, dict(SERVER))


def test_localhost_may_use_http():
    for host in ("localhost", "127.0.0.1", "[::1]"):
        load({"label": "dev", "url": f"http://{host}:9000/mcp"})


def test_an_unresolved_key_vault_reference_is_not_sent():
    profile = load(SERVER).profiles["reception"]
    env = {"ORDERS_MCP_AUTH": "@Microsoft.KeyVault(VaultName=kv;SecretName=orders)"}
    with pytest.raises(McpConfigError, match="ORDERS_MCP_AUTH for header Authorization is not set or not resolved"):
        session_tools(profile.mcp_servers, env)
