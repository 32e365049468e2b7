"""MCP tools end to end at the engine level: real local MCP servers (the official ``mcp`` SDK's FastMCP over
streamable HTTP, on free ports), the emulator playing the platform (it lists and calls the tools itself with the
SDK's client and emits the service's events, each checked against openai-python's models) and the engine, which
records every MCP call from those events. A failing, a slow and an unreachable server never end the call: the
model is told the tool failed and says so."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from mcp.server.fastmcp import FastMCP

from shared.mcp import parse_servers, session_tools
from tests.emulator.helpers import STRICT_SERVER

from .helpers import KEY, Harness, accept_body, profile, scenario

AUTH = "Bearer orders-token-123"


class Servers:
    def __init__(self) -> None:
        self.urls: dict[str, str] = {}
        self.headers_seen: list[dict[str, str]] = []
        self._tasks: list[tuple[uvicorn.Server, asyncio.Task]] = []

    async def start(self, name: str, mcp: FastMCP) -> None:
        app = mcp.streamable_http_app()
        seen = self.headers_seen

        async def recording(scope, receive, send):  # the headers the platform sent
            if scope["type"] == "http":
                seen.append({k.decode(): v.decode() for k, v in scope["headers"]})
            await app(scope, receive, send)

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(recording, log_level="warning", lifespan="on",
                                                timeout_graceful_shutdown=1))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        self._tasks.append((server, task))
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.02)
        assert server.started, f"MCP server {name} did not start"
        self.urls[name] = f"http://127.0.0.1:{port}/mcp"

    async def aclose(self) -> None:
        for server, _ in self._tasks:
            server.should_exit = True
        await asyncio.gather(*(t for _, t in self._tasks), return_exceptions=True)


def orders_server() -> FastMCP:
    mcp = FastMCP("orders", stateless_http=True, json_response=True)

    @mcp.tool()
    def lookup_order(order_id: str) -> str:
        """Where an order is."""
        return json.dumps({"order_id": order_id, "status": "shipped", "eta": "tomorrow"})

    return mcp


def failing_server() -> FastMCP:
    mcp = FastMCP("stock", stateless_http=True, json_response=True)

    @mcp.tool()
    def check_stock(sku: str) -> str:
        """Stock of an item."""
        raise RuntimeError("inventory database is down")

    return mcp


def slow_server() -> FastMCP:
    mcp = FastMCP("slow", stateless_http=True, json_response=True)

    @mcp.tool()
    async def slow_lookup(q: str) -> str:
        """Takes too long."""
        await asyncio.sleep(30)
        return "late"

    return mcp


def closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there any more
    return f"http://127.0.0.1:{port}/mcp"


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    s = Servers()
    await s.start("orders", orders_server())
    await s.start("stock", failing_server())
    await s.start("slow", slow_server())
    yield s
    await s.aclose()


def mcp_profile(servers: Servers) -> dict:
    raw = [
        {"label": "orders", "url": servers.urls["orders"], "allowed_tools": ["lookup_order"],
         "headers": {"Authorization": "ORDERS_MCP_AUTH"}},
        {"label": "stock", "url": servers.urls["stock"]},
        {"label": "slow", "url": servers.urls["slow"]},
        {"label": "gone", "url": closed_port_url()},
    ]
    return profile(mcp_servers=list(parse_servers(raw, "profiles.reception.mcp_servers",
                                                  {"ORDERS_MCP_AUTH": AUTH})))


async def start_call(h: Harness, sc: dict, prof: dict) -> dict:
    from shared.transcript import iso, utc_now

    call_id = await h.emu.place_call(sc)
    body = accept_body(prof, h.registry)
    body["tools"] += session_tools(prof["mcp_servers"], {"ORDERS_MCP_AUTH": AUTH})  # as shared/intake.py does
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{h.emu.http_url}/openai/v1/realtime/calls/{call_id}/accept", json=body,
                            headers={"api-key": KEY})
        assert r.status_code == 200, r.text
    return {"call_id": call_id, "webhook_id": "wh_test", "accepted_at": iso(utc_now()), "caller": "+1425***1212",
            "dialed": "+1800***1212", "profile_name": "reception", "profile": prof, "max_duration_seconds": 60}


RULES = [
    {"match": r"order (?P<id>\d+)", "regex": True,
     "mcp": {"server": "orders", "tool": "lookup_order", "arguments": {"order_id": "{id}"}}},
    {"match": "stock", "mcp": {"server": "stock", "tool": "check_stock", "arguments": {"sku": "A1"}}},
    {"match": "slow", "mcp": {"server": "slow", "tool": "slow_lookup", "arguments": {"q": "x"}}},
    {"match": "gone", "mcp": {"server": "gone", "tool": "anything", "arguments": {}}},
]
MODEL = {"after_function": {"lookup_order": "Order {order_id} has {status}; it arrives {eta}."},
         "mcp_failed": "Sorry, that system failed: {error}"}


async def test_mcp_calls_are_made_by_the_platform_and_recorded(emulator_factory, servers) -> None:
    emu = await emulator_factory(speech_seconds_per_char=0.001, mcp_timeout_s=3.0)
    h = Harness(emu)
    try:
        sc = scenario([{"say": "Where is order 1234?"}, {"say": "Is it in stock?"}, {"say": "Try the slow one."},
                       {"say": "And the gone one?"}, {"say": "Thanks, bye."}], rules=RULES, **MODEL)
        call = await start_call(h, sc, mcp_profile(servers))
        summary = await asyncio.wait_for(h.converse(call), 60)
        cid = call["call_id"]

        # Every event the emulated platform sent is a valid GA server event (MCP ones included).
        events = [e for _, e in emu.calls[cid].server_events]
        for event in events:
            STRICT_SERVER.validate_python(event)
        kinds = [e["type"] for e in events]
        assert kinds.count("mcp_list_tools.completed") == 3 and kinds.count("mcp_list_tools.failed") == 1
        assert kinds.count("response.mcp_call.completed") == 1 and kinds.count("response.mcp_call.failed") == 2

        # The header value came from the setting and reached the MCP server; the other servers got none.
        assert any(hd.get("authorization") == AUTH for hd in servers.headers_seen)

        # The call went on after every failure, and the model told the caller what happened.
        agent = [t["text"] for t in summary["transcript"] if t["role"] == "agent"]
        assert "Order 1234 has shipped; it arrives tomorrow." in agent
        assert any(t.startswith("Sorry, that system failed:") and "inventory database is down" in t for t in agent)
        assert any(t.startswith("Sorry, that system failed:") and "timed out" in t.lower() for t in agent)
        assert "Sorry, that system failed: the tool is not available" in agent
        assert summary["outcome"] == "caller_hung_up"

        # What the engine recorded from the sideband: server, tool, ok, latency (and why it failed).
        mcp = [t for t in summary["tools"] if t.get("kind") == "mcp"]
        by_server = {t["server"]: t for t in mcp}
        assert by_server["orders"]["name"] == "lookup_order" and by_server["orders"]["ok"] is True
        assert by_server["orders"]["arguments"] == {"order_id": "1234"}
        assert by_server["stock"]["ok"] is False and "tool_execution_error" in by_server["stock"]["error"]
        # The platform gave up after mcp_timeout_s (3 s); the engine sees it from its side of the socket.
        assert by_server["slow"]["ok"] is False and by_server["slow"]["latency_ms"] >= 2500
        assert by_server["gone"] == {**by_server["gone"], "name": "mcp_list_tools", "ok": False}
        assert all(t["latency_ms"] >= 0 for t in mcp if t["latency_ms"] is not None)
        json.dumps(summary)
    finally:
        await h.aclose()


async def test_approval_requests_are_denied_and_the_call_goes_on(emulator_factory, servers) -> None:
    emu = await emulator_factory(speech_seconds_per_char=0.001, mcp_timeout_s=5.0)
    h = Harness(emu)
    try:
        raw = [{"label": "orders", "url": servers.urls["orders"], "require_approval": "always"}]
        prof = profile(mcp_servers=list(parse_servers(raw, "p", {})))
        sc = scenario([{"say": "Where is order 77?"}, {"say": "Bye."}], rules=RULES[:1], **MODEL)
        call = await start_call(h, sc, prof)
        summary = await asyncio.wait_for(h.converse(call), 60)
        cid = call["call_id"]
        answers = [e["item"] for e in h.client_events(cid, "conversation.item.create")
                   if e["item"].get("type") == "mcp_approval_response"]
        assert len(answers) == 1 and answers[0]["approve"] is False
        h.validate_all(cid)  # the approval answer is a valid GA client event
        assert not [e for _, e in emu.calls[cid].server_events if e["type"] == "response.mcp_call.completed"]
        assert "Sorry, that system failed: the call was not approved" in [t["text"] for t in summary["transcript"]]
        (entry,) = [t for t in summary["tools"] if t.get("kind") == "mcp"]
        assert (entry["server"], entry["name"], entry["ok"], entry["error"]) == ("orders", "lookup_order", False,
                                                                                  "approval denied")
    finally:
        await h.aclose()
