"""The whole local stack as real processes (Azurite, emulator, app under the local runner), sipp as the phone.

One stack serves the session (ports picked at random, its own Azurite in a temp folder, a test routing rules
file, a unique call-records queue); each test finds its calls by the emulator call id, so tests never read
each other's records.
"""

from __future__ import annotations

import copy
import json
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from localrun.demo import (
    SippPhone,
    emulator_call,
    emulator_calls,
    take_call_record,
    take_call_records,
    wait_for_new_calls,
)
from localrun.stack import ROOT, Stack, StackConfig, http_json

SIPP_DIR = ROOT / "emulator" / "sipp"
SCENARIOS = Path(__file__).resolve().parent / "scenarios"

RECEPTION = "+18005551212"
CLOSED = "+18005550100"  # a profile that is always after hours: reject 480
SHORT = "+18005550199"  # a profile with a 10 s maximum duration
DENIED_CALLER = "+19005551234"
SHORT_MAX_S = 10
ANALYSED = "+18005550142"  # reception with post-call analysis (docs/analysis.md)
TOOLED = "+18005550177"  # reception with remote MCP servers (docs/mcp.md): one up, one down
MCP_AUTH = "Bearer e2e-" + secrets.token_hex(8)
ANALYSIS = {
    "summary": "One sentence on what the caller wanted.",
    "data": {"type": "object",
             "properties": {"order_number": {"type": ["string", "null"]}, "follow_up": {"type": "boolean"}},
             "required": ["order_number", "follow_up"], "additionalProperties": False},
    "success": "Success when the caller learned where the order is.",
}

if shutil.which("sipp") is None:
    pytest.skip("sipp is not installed (Debian package sip-tester; `make deps` installs it)", allow_module_level=True)


def routing_rules(mcp_url: str = "http://127.0.0.1:9/mcp") -> dict:
    base = json.loads((ROOT / "routing.json").read_text())
    reception = base["profiles"]["reception"]
    closed = copy.deepcopy(reception)
    today = datetime.now(UTC).date()
    closed["hours"] = {
        "timezone": "UTC",
        "weekly": {"mon": ["09:00-17:00"]},
        "holidays": [(today + timedelta(days=d)).isoformat() for d in (-1, 0, 1)],
        "after_hours": {"action": "reject", "status_code": 480},
    }
    short = copy.deepcopy(reception)
    short["max_duration_seconds"] = SHORT_MAX_S
    short["closing_seconds"] = 3
    analysed = copy.deepcopy(reception)
    analysed["analysis"] = ANALYSIS
    tooled = copy.deepcopy(reception)
    tooled["mcp_servers"] = [
        {"label": "orders", "url": mcp_url, "allowed_tools": ["lookup_order"],
         "headers": {"Authorization": "E2E_ORDERS_MCP_AUTH"}},
        {"label": "stock", "url": closed_port_url()},
    ]
    return {
        "callers": {"allow": ["+1", "+44"], "deny": ["+1900"]},
        "numbers": {RECEPTION: "reception", CLOSED: "closed", SHORT: "short", ANALYSED: "analysed",
                    TOOLED: "tooled", "*": "reception"},
        "profiles": {"reception": reception, "closed": closed, "short": short, "analysed": analysed,
                     "tooled": tooled},
    }


def closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/mcp"


class McpServer:
    """A real MCP server (the official SDK's FastMCP, streamable HTTP) in a thread, for the platform to call."""

    def __init__(self) -> None:
        import uvicorn
        from mcp.server.fastmcp import FastMCP

        mcp = FastMCP("orders", stateless_http=True, json_response=True)
        self.authorizations: list[str] = []

        @mcp.tool()
        def lookup_order(order_id: str) -> str:
            """Where an order is."""
            return json.dumps({"order_id": order_id, "status": "out for delivery"})

        app = mcp.streamable_http_app()

        async def recording(scope, receive, send):
            if scope["type"] == "http":
                self.authorizations += [v.decode() for k, v in scope["headers"] if k == b"authorization"]
            await app(scope, receive, send)

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/mcp"
        self.server = uvicorn.Server(uvicorn.Config(recording, log_level="warning", timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> McpServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert time.monotonic() < deadline, "the MCP server did not start"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="session")
def mcp_server() -> Iterator[McpServer]:
    server = McpServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory, mcp_server) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("e2e-stack")
    rules = tmp / "routing.json"
    rules.write_text(json.dumps(routing_rules(mcp_server.url), indent=2))
    config = StackConfig(
        app_port=0, emulator_http_port=0, sip_port=0, azurite_ports=(0, 0, 0), azurite_location=tmp / "azurite",
        scenario_dir=SCENARIOS, use_func=False, echo=False, log_dir=tmp / "logs", task_hub_dir=tmp / "taskhub",
        emulator_options={"speech_seconds_per_char": 0.01},
        app_env={"ROUTING_RULES_PATH": str(rules), "CALL_RECORDS_QUEUE": "e2e" + secrets.token_hex(5),
                 "CALL_TURNS_TABLE": "e2e" + secrets.token_hex(5),
                 "AZURE_OPENAI_ANALYSIS_DEPLOYMENT": "gpt-4.1-mini", "E2E_ORDERS_MCP_AUTH": MCP_AUTH},
    )
    s = Stack(config)
    s.start()
    try:
        yield s
    finally:
        s.stop()


class Phone:
    """sipp calls at the stack's SIP front door, and what the emulator and the app saw of them."""

    def __init__(self, stack: Stack, tmp: Path):
        self.stack = stack
        self.tmp = tmp

    def call(
        self,
        xml: str,
        *,
        scenario: str = "default",
        dialed: str = RECEPTION,
        caller: str = "+14255551212",
        calls: int = 1,
        rate: int | None = None,
        pause_ms: int = 300,
        timeout_s: int = 60,
    ) -> tuple[SippPhone, list[str]]:
        known = {c["call_id"] for c in emulator_calls(self.stack.emulator_url)}
        path = SIPP_DIR / f"{xml}.xml"
        if not path.exists():
            path = Path(__file__).resolve().parent / "sipp" / f"{xml}.xml"
        phone = SippPhone(path, self.stack.sip_port, self.tmp, scenario=scenario, dialed=dialed, caller=caller,
                          calls=calls, rate=rate, pause_ms=pause_ms, timeout_s=timeout_s).start()
        try:
            ids = wait_for_new_calls(self.stack.emulator_url, known, count=calls, timeout=30)
        except Exception:
            phone.kill()
            raise
        return phone, ids

    def emulator(self, call_id: str) -> dict:
        return emulator_call(self.stack.emulator_url, call_id)

    def wait_ended(self, call_id: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            call = self.emulator(call_id)
            if call["state"] in ("ended", "rejected", "expired"):
                return call
            if time.monotonic() > deadline:
                raise AssertionError(f"call {call_id} still {call['state']} after {timeout} s")
            time.sleep(0.1)

    def wait_state(self, call_id: str, state: str, timeout: float = 15) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            call = self.emulator(call_id)
            if call["state"] == state:
                return call
            if time.monotonic() > deadline:
                raise AssertionError(f"call {call_id} is {call['state']}, not {state}, after {timeout} s")
            time.sleep(0.05)

    def record(self, call_id: str, timeout: float = 20) -> dict:
        return take_call_record(self.stack.storage_connection_string,
                                self.stack.config.app_env["CALL_RECORDS_QUEUE"], call_id, timeout=timeout)

    def assert_no_other_record(self, call_id: str, wait_s: float = 2.0) -> None:
        """After a call's record was taken: no second one turns up (records are exactly-once per call)."""
        try:
            extra = self.record(call_id, timeout=wait_s)
        except TimeoutError:
            return
        raise AssertionError(f"a second record for {call_id}: {extra}")

    def records(self, call_ids: list[str], timeout: float = 30) -> dict[str, dict]:
        """Several calls' records in one pass over the queue (call id -> record)."""
        return take_call_records(self.stack.storage_connection_string,
                                 self.stack.config.app_env["CALL_RECORDS_QUEUE"], call_ids, timeout=timeout)

    def operator(self, method: str, route: str, body: object = None) -> tuple[int, object]:
        return http_json(method, f"{self.stack.app_url}/api/{route}", body,
                         headers={"x-functions-key": self.stack.function_key})

    @property
    def _durable_key(self) -> dict[str, str]:
        # The Durable HTTP API on the app's port needs the master key, from loopback too (docs/local.md).
        return {"x-functions-key": self.stack.master_key}

    def durable_instances(self, prefix: str) -> list[dict]:
        status, body = http_json("GET", f"{self.stack.app_url}/runtime/webhooks/durabletask/instances/"
                                        f"?instanceIdPrefix={prefix}", headers=self._durable_key)
        assert status == 200, body
        return body  # type: ignore[return-value]

    def orchestration(self, call_id: str, history: bool = False) -> dict | None:
        query = "?showHistory=true" if history else ""
        status, body = http_json("GET", f"{self.stack.app_url}/runtime/webhooks/durabletask/instances/{call_id}{query}",
                                 headers=self._durable_key)
        return body if status in (200, 202) else None  # type: ignore[return-value]


@pytest.fixture
def phone(stack: Stack, tmp_path: Path) -> Phone:
    return Phone(stack, tmp_path)
