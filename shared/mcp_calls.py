"""MCP calls as the sideband sees them: the platform calls the MCP servers itself (shared/mcp.py), and Switchboard
records each call from the server events (docs/mcp.md, "What Switchboard records").

Events (GA Realtime; openai-python ``openai/types/realtime``): an ``mcp_call`` item appears
(``response.output_item.added`` / ``conversation.item.added``), ``response.mcp_call.in_progress``, then
``response.mcp_call.completed`` or ``response.mcp_call.failed``, and the item is done with its ``output`` or
``error``. Listing a server's tools gives an ``mcp_list_tools`` item and ``mcp_list_tools.completed`` / ``.failed``.
An ``mcp_approval_request`` item asks whether a call may go ahead (the profile's ``require_approval``).

Each finished call becomes one entry of the call's tool log (which the record carries as ``tools``):
``{"name", "server", "kind": "mcp", "arguments", "ok", "at", "latency_ms"[, "error"]}``. Latency runs from the
first sight of the call to its completed/failed event.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import telemetry
from .transcript import iso

log = logging.getLogger("switchboard.mcp")

MAX_ERROR_CHARS = 200
# What the platform is told when an approval is asked for: nobody on a phone call can approve a tool call.
APPROVAL_DENIED_REASON = "Tool calls that need approval are not allowed on this phone line."


@dataclass
class _Pending:
    server: str
    name: str
    arguments: str
    started: float
    at: str
    entry: dict[str, Any] | None = None


@dataclass
class McpCallLog:
    """Turns sideband events into tool-log entries. ``clock`` is the engine's (aware datetime), ``monotonic``
    a seconds counter for latency; ``allowed`` names the tools the profile lists per server (metric labels)."""

    tool_log: list[dict[str, Any]]
    clock: Callable[[], datetime]
    monotonic: Callable[[], float]
    allowed: dict[str, set[str]] = field(default_factory=dict)
    _calls: dict[str, _Pending] = field(default_factory=dict)
    _lists: dict[str, str] = field(default_factory=dict)  # mcp_list_tools item id -> server label
    _answered: set[str] = field(default_factory=set)  # approval request ids already answered

    @classmethod
    def for_profile(cls, profile: dict[str, Any], tool_log: list[dict[str, Any]], clock: Callable[[], datetime],
                    monotonic: Callable[[], float]) -> McpCallLog:
        allowed = {s["label"]: set(s.get("allowed_tools") or []) for s in profile.get("mcp_servers") or []}
        return cls(tool_log, clock, monotonic, allowed)

    def on_event(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """Handle one server event; returns a client event to send (an approval answer), else None."""
        etype = event.get("type")
        if etype in ("response.output_item.added", "conversation.item.added", "response.output_item.done",
                     "conversation.item.done"):
            item = event.get("item")
            if isinstance(item, dict):
                return self._on_item(item, done=etype.endswith(".done"))
        elif etype == "response.mcp_call.in_progress":
            pending = self._calls.get(str(event.get("item_id")))
            if pending is not None and pending.entry is None:
                pending.started = min(pending.started, self.monotonic())
        elif etype == "response.mcp_call_arguments.done":
            pending = self._calls.get(str(event.get("item_id")))
            if pending is not None and isinstance(event.get("arguments"), str):
                pending.arguments = event["arguments"]
        elif etype in ("response.mcp_call.completed", "response.mcp_call.failed"):
            self._finish(str(event.get("item_id")), ok=etype.endswith("completed"), error=None)
        elif etype == "mcp_list_tools.failed":
            server = self._lists.get(str(event.get("item_id")), "unknown")
            log.warning("MCP server %s: listing its tools failed; its tools are not available", server)
            self.tool_log.append({"name": "mcp_list_tools", "server": server, "kind": "mcp", "arguments": {},
                                  "ok": False, "at": iso(self.clock()), "latency_ms": None,
                                  "error": "listing the server's tools failed"})
        return None

    def _on_item(self, item: dict[str, Any], *, done: bool) -> dict[str, Any] | None:
        itype = item.get("type")
        item_id = str(item.get("id"))
        if itype == "mcp_list_tools":
            self._lists[item_id] = str(item.get("server_label"))
        elif itype == "mcp_call":
            pending = self._calls.get(item_id)
            if pending is None:
                pending = self._calls[item_id] = _Pending(
                    str(item.get("server_label")), str(item.get("name")), str(item.get("arguments") or ""),
                    self.monotonic(), iso(self.clock()))
            if item.get("arguments"):
                pending.arguments = str(item["arguments"])
                if pending.entry is not None:
                    pending.entry["arguments"] = _arguments(pending.arguments)
            if done:
                # The item is final: finish it if no completed/failed event was seen, and fill in the error text.
                error = item.get("error")
                self._finish(item_id, ok=error is None, error=error if isinstance(error, dict) else None)
        elif itype == "mcp_approval_request":
            request_id = str(item.get("id"))
            if request_id in self._answered:
                return None
            self._answered.add(request_id)
            server, name = str(item.get("server_label")), str(item.get("name"))
            log.info("MCP server %s: approval asked for tool %s; denied (no approver on a phone call)", server,
                     name if name in self.allowed.get(server, set()) else "other")
            self.tool_log.append({"name": name, "server": server, "kind": "mcp",
                                  "arguments": _arguments(item.get("arguments")), "ok": False,
                                  "at": iso(self.clock()), "latency_ms": None, "error": "approval denied"})
            return {"type": "conversation.item.create",
                    "item": {"id": "mcpa_" + secrets.token_hex(10), "type": "mcp_approval_response",
                             "approval_request_id": request_id, "approve": False, "reason": APPROVAL_DENIED_REASON}}
        return None

    def _finish(self, item_id: str, *, ok: bool, error: dict[str, Any] | None) -> None:
        pending = self._calls.get(item_id)
        if pending is None:
            return
        if pending.entry is None:
            ms = round((self.monotonic() - pending.started) * 1000, 1)
            pending.entry = {"name": pending.name, "server": pending.server, "kind": "mcp",
                             "arguments": _arguments(pending.arguments), "ok": ok, "at": pending.at, "latency_ms": ms}
            self.tool_log.append(pending.entry)
            telemetry.record_mcp_call(pending.server, self._metric_tool(pending), ok, ms)
        if error is not None and "error" not in pending.entry:
            pending.entry["ok"] = False
            pending.entry["error"] = f"{error.get('type')}: {str(error.get('message') or '')[:MAX_ERROR_CHARS]}"
            log.warning("MCP call %s.%s failed: %s", pending.server, self._metric_tool(pending),
                        pending.entry["error"])

    def _metric_tool(self, pending: _Pending) -> str:
        # Tool names come from the MCP server: only names the profile lists become metric labels or log text.
        return pending.name if pending.name in self.allowed.get(pending.server, set()) else "other"


def _arguments(raw: Any) -> Any:
    try:
        value = json.loads(raw) if isinstance(raw, str) and raw else {}
    except ValueError:
        return raw
    return value
