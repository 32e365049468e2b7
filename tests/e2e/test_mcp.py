"""MCP tools end to end: sipp -> emulator (the platform, calling a real FastMCP server itself) -> app -> record."""

from __future__ import annotations

from tests.e2e.conftest import MCP_AUTH, TOOLED


def test_a_call_uses_a_remote_mcp_tool_and_survives_a_dead_server(phone, mcp_server):
    sipp, (call_id,) = phone.call("uac_accept_bye_recv", scenario="e2e_mcp", dialed=TOOLED)
    assert sipp.wait(60) == 0, sipp.log()
    record = phone.record(call_id, timeout=40)
    assert record["profile_name"] == "tooled" and record["outcome"] == "agent_ended"
    texts = [(t["role"], t["text"]) for t in record["transcript"]]
    assert ("agent", "Your order is out for delivery.") in texts
    assert ("agent", "Sorry, I can't check that right now.") in texts  # the dead server: the call went on
    mcp = [t for t in record["tools"] if t.get("kind") == "mcp"]
    assert [(t["server"], t["name"], t["ok"]) for t in mcp] == [("stock", "mcp_list_tools", False),
                                                                ("orders", "lookup_order", True)]
    assert mcp[1]["arguments"] == {"order_id": "1234"} and mcp[1]["latency_ms"] >= 0
    assert [t["name"] for t in record["tools"]][-1] == "end_call"
    assert MCP_AUTH in mcp_server.authorizations  # the header's value came from the app setting
    phone.assert_no_other_record(call_id)
