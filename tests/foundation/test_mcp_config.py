"""A profile's ``mcp_servers``: validated at load, passed on accept as ``type: "mcp"`` tools (shared/mcp.py)."""

from __future__ import annotations

import pytest
from openai.types.realtime import RealtimeSessionCreateRequest

from shared.mcp import McpConfigError, parse_servers, session_tools
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


def server(**changes) -> dict:
    return {**SERVER, **changes}


LONG_URL = "https://mcp.example.com/" + "a" * (2000 - len("https://mcp.example.com/"))


@pytest.mark.parametrize(("servers", "field", "says"), [
    ("orders", "mcp_servers", "expected a list of servers, got str"),
    ([server(label=f"s{i}") for i in range(11)], "mcp_servers", "at most 10 servers"),
    (["orders"], "mcp_servers[0]", "expected an object, got str"),
    ([{"url": SERVER["url"]}], "mcp_servers[0].label", "is required"),
    ([server(label=42)], "mcp_servers[0].label", "1-64 letters, digits, '_' or '-'"),
    ([server(label="a" * 65)], "mcp_servers[0].label", "1-64 letters"),
    ([server(url=42)], "mcp_servers[0].url", "expected an https URL"),
    ([server(url=LONG_URL + "a")], "mcp_servers[0].url", "expected an https URL"),
    ([server(url="https://mcp.example.com:99999/mcp")], "mcp_servers[0].url", "not a valid URL"),
    ([server(url="https://orders@mcp.example.com/mcp")], "mcp_servers[0].url", "no user info or fragment"),
    ([server(url="https://:pw@mcp.example.com/mcp")], "mcp_servers[0].url", "no user info or fragment"),
    ([server(url="https://mcp.example.com/mcp#tools")], "mcp_servers[0].url", "no user info or fragment"),
    ([server(url="https:///mcp")], "mcp_servers[0].url", "expected an https URL with a host"),
    ([server(url="//mcp.example.com/mcp")], "mcp_servers[0].url", "must be https (plain http only for localhost), "
                                                                  "got no scheme"),
    ([server(url="http://localhost.example.com/mcp")], "mcp_servers[0].url", "got http scheme"),
    ([server(description="")], "mcp_servers[0].description", "expected a string of 1-1000 characters"),
    ([server(description="x" * 1001)], "mcp_servers[0].description", "expected a string of 1-1000 characters"),
    ([server(description=["Orders"])], "mcp_servers[0].description", "expected a string"),
    ([server(allowed_tools="lookup_order")], "mcp_servers[0].allowed_tools", "expected a non-empty list"),
    ([server(allowed_tools=["lookup_order", 7])], "mcp_servers[0].allowed_tools[1]", "expected a tool name"),
    ([server(allowed_tools=["lookup order"])], "mcp_servers[0].allowed_tools[0]", "expected a tool name"),
    ([server(allowed_tools=["a" * 129])], "mcp_servers[0].allowed_tools[0]", "expected a tool name"),
    ([server(allowed_tools=["lookup_order", "lookup_order"])], "mcp_servers[0].allowed_tools",
     "duplicate tool names"),
    ([server(headers={})], "mcp_servers[0].headers", "expected an object of header name -> setting name"),
    ([server(headers="ORDERS_MCP_AUTH")], "mcp_servers[0].headers", "expected an object"),
    ([server(headers={"X Auth": "ORDERS_MCP_AUTH"})], "mcp_servers[0].headers.X Auth", "not a header name"),
    ([server(headers={"Content-Type": "ORDERS_MCP_AUTH"})], "mcp_servers[0].headers.Content-Type",
     "not a header name a profile may set"),
    ([server(headers={"Authorization": 42})], "mcp_servers[0].headers.Authorization",
     "expected the name of a setting"),
    ([server(headers={"Authorization": "WEBHOOK_SECRET"})], "mcp_servers[0].headers.Authorization",
     "WEBHOOK_SECRET is one of Switchboard's own settings; it is never sent to an MCP server"),
    ([server(require_approval="ALWAYS")], "mcp_servers[0].require_approval", "expected 'never', 'always' or {"),
    ([server(require_approval={})], "mcp_servers[0].require_approval", "expected 'never', 'always'"),
    ([server(require_approval={"sometimes": {"read_only": True}})], "mcp_servers[0].require_approval",
     "expected 'never', 'always'"),
    ([server(require_approval={"always": {"read_only": True}, "later": {"read_only": True}})],
     "mcp_servers[0].require_approval", "expected 'never', 'always'"),
    ([server(require_approval={"never": {}})], "mcp_servers[0].require_approval.never",
     'expected {"tool_names": [...]} and/or {"read_only": true|false}'),
    ([server(require_approval={"never": "read_only"})], "mcp_servers[0].require_approval.never",
     'expected {"tool_names"'),
    ([server(require_approval={"never": {"read_only": True, "tools": ["x"]}})],
     "mcp_servers[0].require_approval.never", 'expected {"tool_names"'),
    ([server(require_approval={"always": {"tool_names": []}})], "mcp_servers[0].require_approval.always.tool_names",
     "expected a non-empty list of tool names"),
    ([server(require_approval={"always": {"tool_names": ["refund", "refund"]}})],
     "mcp_servers[0].require_approval.always.tool_names", "duplicate tool names"),
])
def test_each_bad_field_is_named_with_what_is_expected(servers, field, says):
    raw = rules()
    raw["profiles"]["reception"]["mcp_servers"] = servers
    with pytest.raises(RoutingRulesError) as err:
        parse_rules(raw, tool_names=[], max_call_duration_seconds=900)
    message = str(err.value)
    assert message.startswith(f"profiles.reception.{field}: ") and says in message, message


def test_the_largest_allowed_servers_load_and_reach_the_session():
    biggest = [server(label=f"s{i}", headers={}) for i in range(10)]
    for entry in biggest:
        del entry["headers"]
    biggest[0] = {"label": "L" * 64, "url": LONG_URL, "description": "d" * 1000, "allowed_tools": ["t" * 128],
                  "require_approval": "always"}
    profile = load(*biggest).profiles["reception"]
    assert len(profile.mcp_servers) == 10
    [first, *_] = session_tools(profile.mcp_servers)
    assert first == {"type": "mcp", "server_label": "L" * 64, "server_url": LONG_URL, "server_description": "d" * 1000,
                     "allowed_tools": ["t" * 128], "require_approval": "always"}


def test_a_description_is_passed_to_the_session_as_the_server_description():
    profile = load(server(description="Order status and delivery dates")).profiles["reception"]
    assert profile.to_json()["mcp_servers"][0]["description"] == "Order status and delivery dates"
    [tool] = session_tools(profile.mcp_servers)
    assert tool["server_description"] == "Order status and delivery dates"


def test_a_server_without_a_policy_needs_no_approval():
    [parsed] = parse_servers([{"label": "crm", "url": "https://crm.example.com/mcp"}], "mcp_servers")
    assert parsed == {"label": "crm", "url": "https://crm.example.com/mcp", "require_approval": "never"}
    # Servers as an older record holds them (no policy key) are sent with the same default.
    [tool] = session_tools([{"label": "crm", "url": "https://crm.example.com/mcp"}])
    assert tool == {"type": "mcp", "server_label": "crm", "server_url": "https://crm.example.com/mcp",
                    "require_approval": "never"}


def test_header_settings_are_looked_up_in_the_settings_given():
    raw = [server()]
    env = {"ORDERS_MCP_AUTH": "Bearer other"}
    assert parse_servers(raw, "mcp_servers", env)[0]["headers"] == {"Authorization": "ORDERS_MCP_AUTH"}
    # The process has the setting (the fixture), but the settings given do not: that is what counts.
    with pytest.raises(McpConfigError, match=r"names setting 'ORDERS_MCP_AUTH', which is not set"):
        parse_servers(raw, "mcp_servers", {})
    with pytest.raises(McpConfigError, match="which is not set"):
        parse_servers(raw, "mcp_servers", {"ORDERS_MCP_AUTH": "   "})


@pytest.mark.parametrize("env", [{}, {"ORDERS_MCP_AUTH": "  "}], ids=["removed", "blank"])
def test_a_header_setting_gone_after_load_stops_the_accept_and_names_the_setting(env):
    profile = load(SERVER).profiles["reception"]
    with pytest.raises(McpConfigError) as err:
        session_tools(profile.mcp_servers, env)
    assert err.value.setting == "ORDERS_MCP_AUTH"
    assert str(err.value) == ("mcp server orders: setting ORDERS_MCP_AUTH for header Authorization is not set or "
                              "not resolved yet")


def test_the_session_tools_are_copies_the_profile_does_not_share():
    policy = {"always": {"tool_names": ["refund"]}, "never": {"read_only": True}}
    profile = load(server(require_approval=policy)).profiles["reception"]
    [tool] = session_tools(profile.mcp_servers)
    tool["require_approval"]["always"]["tool_names"].append("delete_everything")
    tool["allowed_tools"].append("delete_everything")
    # The next call's session gets the profile as loaded.
    [again] = session_tools(profile.mcp_servers)
    assert again["require_approval"] == policy and again["allowed_tools"] == ["lookup_order"]


def test_the_approval_policies_round_trip():
    for policy in ("always", "never", {"always": {"tool_names": ["refund", "cancel"], "read_only": False}},
                   {"never": {"read_only": True}}):
        [tool] = session_tools(load(server(require_approval=policy)).profiles["reception"].mcp_servers)
        assert tool["require_approval"] == policy


@pytest.mark.parametrize("url", [" https://mcp.example.com/mcp", "https://mcp.example.com/mcp ",
                                 "https://mcp.example.com/m cp", "https://mcp.example.com/mcp\n",
                                 "https://mcp.exa\tmple.com/mcp", "https://mcp.example.com/\x00mcp"])
def test_a_url_with_spaces_or_control_characters_is_refused_at_load(url):
    # The platform would get the URL as written and fail every call of the profile; the load says which field.
    with pytest.raises(RoutingRulesError,
                       match=r"^profiles\.reception\.mcp_servers\[0\]\.url: no spaces or control characters$"):
        load(server(url=url))


@pytest.mark.parametrize(("field", "name"), [
    ("label", "a"), ("label", "orders-v2_EU"), ("description", "x"), ("tool", "orders.lookup-v2_X"), ("tool", "t"),
    ("header", "X-Api-Key"), ("header", "X_Trace.Id~!#$%&'*+^`|"), ("header", "H" * 128),
    ("setting", "_ORDERS_AUTH_2"), ("setting", "S" + "s" * 127),
])
def test_names_within_the_documented_alphabets_load(field, name, monkeypatch):
    entry = {"label": "orders", "url": "https://mcp.example.com/mcp"}
    if field in ("label", "description"):
        entry[field] = name
    elif field == "tool":
        entry["allowed_tools"] = [name]
    elif field == "header":
        entry["headers"] = {name: "ORDERS_MCP_AUTH"}
    else:
        monkeypatch.setenv(name, "Bearer x")
        entry["headers"] = {"Authorization": name}
    load(entry)


@pytest.mark.parametrize(("field", "name"), [
    ("label", "orders.v2"), ("label", ""), ("label", "ordérs"), ("tool", "lookup:order"), ("tool", ""),
    ("header", "X-Evil:"), ("header", "X-A\r\nHost"), ("header", "H" * 129), ("header", "X-Ä"),
    ("setting", "2ND_AUTH"), ("setting", "S" * 129), ("setting", "ORDERS-AUTH"),
])
def test_names_outside_the_documented_alphabets_are_refused(field, name, monkeypatch):
    entry = {"label": "orders", "url": "https://mcp.example.com/mcp"}
    if field == "label":
        entry["label"] = name
    elif field == "tool":
        entry["allowed_tools"] = [name]
    elif field == "header":
        entry["headers"] = {name: "ORDERS_MCP_AUTH"}
    else:
        monkeypatch.setenv(name, "Bearer x")
        entry["headers"] = {"Authorization": name}
    with pytest.raises(RoutingRulesError, match=r"^profiles\.reception\.mcp_servers\[0\]\."):
        load(entry)


@pytest.mark.parametrize("header", ["Host", "Content-Length", "content-type", "Transfer-Encoding", "CONNECTION",
                                    "Accept"])
def test_headers_the_http_client_owns_are_refused(header):
    with pytest.raises(RoutingRulesError, match=rf"mcp_servers\[0\]\.headers\.{header}: not a header name"):
        load(server(headers={header: "ORDERS_MCP_AUTH"}))


@pytest.mark.parametrize("host", ["127.0.0.2", "host", "local", "localhost.example.com", "0.0.0.0", "[::2]"])
def test_plain_http_is_refused_for_any_other_host(host):
    with pytest.raises(RoutingRulesError, match="must be https"):
        load({"label": "dev", "url": f"http://{host}:9000/mcp"})
