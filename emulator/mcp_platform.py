"""The platform's side of remote MCP tools: list a server's tools and call them over the MCP streamable HTTP
transport, with the official ``mcp`` Python SDK, as the Realtime service does for a session's ``type: "mcp"``
tools (docs/mcp.md). Errors come back in the shapes of the ``mcp_call`` item's ``error`` (openai-python
``RealtimeMcpToolCall.error``): ``http_error`` (the server could not be reached or answered an HTTP error),
``protocol_error`` (a JSON-RPC error or a timeout) and ``tool_execution_error`` (the tool reported an error).
"""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from typing import Any

import httpx

# How long the emulated platform waits for an MCP server: per list or call, connection set-up included.
LIST_TIMEOUT_S = 10.0
CALL_TIMEOUT_S = 10.0


class McpFailure(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message"))
        self.error = error


@asynccontextmanager
async def _session(tool: dict[str, Any], limit_s: float):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with httpx.AsyncClient(headers=tool.get("headers") or {}, timeout=limit_s,
                                 follow_redirects=False) as http, \
            streamable_http_client(tool["server_url"], http_client=http) as (read, write, _), \
            ClientSession(read, write) as session:
        await session.initialize()
        yield session


def _error(exc: BaseException) -> dict[str, Any]:
    """The platform's error object for a failure of the MCP exchange."""
    from mcp.shared.exceptions import McpError

    leaves: list[BaseException] = [exc]
    while leaves and isinstance(leaves[0], BaseExceptionGroup):
        leaves = list(leaves[0].exceptions)
    first = leaves[0] if leaves else exc
    if isinstance(first, McpFailure):
        return first.error
    if isinstance(first, McpError):
        return {"type": "protocol_error", "code": int(first.error.code), "message": first.error.message}
    if isinstance(first, httpx.HTTPStatusError):
        return {"type": "http_error", "code": first.response.status_code,
                "message": f"MCP server answered HTTP {first.response.status_code}"}
    if isinstance(first, (TimeoutError, httpx.TimeoutException)):
        return {"type": "protocol_error", "code": -32001, "message": "Request timed out"}
    if isinstance(first, httpx.HTTPError):
        return {"type": "http_error", "code": 0, "message": f"Could not reach the MCP server ({type(first).__name__})"}
    return {"type": "protocol_error", "code": -32603, "message": f"MCP exchange failed ({type(first).__name__})"}


async def list_tools(tool: dict[str, Any], limit_s: float = LIST_TIMEOUT_S) -> list[dict[str, Any]]:
    """The server's tools as ``mcp_list_tools`` item entries, filtered by ``allowed_tools``; raises McpFailure."""
    try:
        async with asyncio.timeout(limit_s):
            async with _session(tool, limit_s) as session:
                result = await session.list_tools()
    except Exception as exc:  # noqa: BLE001 - every failure becomes the platform's error object
        raise McpFailure(_error(exc)) from None
    allowed = _allowed(tool)
    return [{"name": t.name, "description": t.description, "input_schema": t.inputSchema,
             "annotations": t.annotations.model_dump(exclude_none=True) if t.annotations else None}
            for t in result.tools if allowed is None or t.name in allowed]


async def call_tool(tool: dict[str, Any], name: str, arguments: str, limit_s: float = CALL_TIMEOUT_S) -> str:
    """The tool's output text; raises McpFailure with the platform's error object."""
    try:
        args = json.loads(arguments or "{}")
    except ValueError:
        raise McpFailure({"type": "protocol_error", "code": -32602, "message": "Invalid arguments"}) from None
    try:
        async with asyncio.timeout(limit_s):
            async with _session(tool, limit_s) as session:
                result = await session.call_tool(name, args)
    except Exception as exc:  # noqa: BLE001
        raise McpFailure(_error(exc)) from None
    text = "\n".join(getattr(c, "text", "") for c in result.content if getattr(c, "type", "") == "text")
    if result.isError:
        raise McpFailure({"type": "tool_execution_error", "message": text or "The tool reported an error"})
    if not text and result.structuredContent is not None:
        text = json.dumps(result.structuredContent)
    return text


def _allowed(tool: dict[str, Any]) -> set[str] | None:
    allowed = tool.get("allowed_tools")
    if isinstance(allowed, list):
        return set(allowed)
    if isinstance(allowed, dict) and isinstance(allowed.get("tool_names"), list):
        return set(allowed["tool_names"])
    return None


def needs_approval(tool: dict[str, Any], name: str, read_only: bool) -> bool:
    """The ``require_approval`` policy for one tool (default: always, as the service documents)."""
    policy = tool.get("require_approval", "always")
    if policy in ("always", "never"):
        return policy == "always"
    if not isinstance(policy, dict):
        return True
    for verdict in ("never", "always"):
        flt = policy.get(verdict) or {}
        names = flt.get("tool_names")
        if (names is not None and name in names) or ("read_only" in flt and flt["read_only"] == read_only):
            return verdict == "always"
    return True
