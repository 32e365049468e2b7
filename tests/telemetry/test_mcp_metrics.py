"""MCP calls in the telemetry (shared/mcp_calls.py, shared/telemetry.py) and the analysis flag of a record."""

from __future__ import annotations

import datetime as dt

from localrun.telemetry import memory, timing_line
from shared import telemetry
from shared.mcp_calls import McpCallLog


def item(**kw) -> dict:
    return {"id": "i1", "type": "mcp_call", "server_label": "orders", "name": "lookup_order", "arguments": "", **kw}


def test_an_mcp_call_lands_in_the_tool_log_and_its_own_metric() -> None:
    mem = memory()
    ticks = iter([0.0, 0.25])
    log: list[dict] = []
    calls = McpCallLog.for_profile({"mcp_servers": [{"label": "orders", "allowed_tools": ["lookup_order"]}]}, log,
                                   lambda: dt.datetime(2026, 11, 30, tzinfo=dt.UTC), lambda: next(ticks))
    for event in (
        {"type": "response.output_item.added", "item": item()},
        {"type": "response.mcp_call_arguments.done", "item_id": "i1", "arguments": '{"order_id": "1"}'},
        {"type": "response.mcp_call.completed", "item_id": "i1"},
        {"type": "response.output_item.done", "item": item(arguments='{"order_id": "1"}', output="ok", error=None)},
        {"type": "conversation.item.done", "item": item(arguments='{"order_id": "1"}', output="ok", error=None)},
    ):
        assert calls.on_event(event) is None
    assert log == [{"name": "lookup_order", "server": "orders", "kind": "mcp", "arguments": {"order_id": "1"},
                    "ok": True, "at": "2026-11-30T00:00:00.000000Z", "latency_ms": 250.0}]  # once, however seen
    dims = [a for n, a, _ in mem.metric_points() if n == "switchboard.mcp.latency" and a["server"] == "orders"]
    assert dims == [{"server": "orders", "tool": "lookup_order", "ok": True}]
    attrs = telemetry.record_attributes({"call_id": "rtc_1", "tools": log, "analysis_error": "HTTP 500"})
    assert attrs["record.tools"] == "orders/lookup_order:250.0:ok" and attrs["record.analysis"] == "error"
    assert "orders/lookup_order 250.0 ms ok" in timing_line(attrs)


def test_a_tool_name_the_profile_does_not_list_is_not_a_metric_label(caplog) -> None:
    mem = memory()
    log: list[dict] = []
    calls = McpCallLog.for_profile({"mcp_servers": [{"label": "crm"}]}, log,
                                   lambda: dt.datetime(2026, 11, 30, tzinfo=dt.UTC), lambda: 1.0)
    calls.on_event({"type": "conversation.item.added", "item": item(server_label="crm", name="call_+14255551212")})
    calls.on_event({"type": "response.mcp_call.failed", "item_id": "i1"})
    calls.on_event({"type": "conversation.item.done", "item": item(
        server_label="crm", name="call_+14255551212",
        error={"type": "http_error", "code": 502, "message": "Bad gateway"})})
    assert log[0]["ok"] is False and log[0]["error"] == "http_error: Bad gateway"
    assert "crm.other failed" in caplog.text and "+1425" not in caplog.text
    dims = [a for n, a, _ in mem.metric_points() if n == "switchboard.mcp.latency" and a["server"] == "crm"]
    assert dims == [{"server": "crm", "tool": "other", "ok": False}]
