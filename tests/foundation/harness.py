"""Builds an Intake wired to a real call-control server and records what the Functions layer would do."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from shared.admission import Admission
from shared.auth import ApiKeyAuth
from shared.call_control import CallControlClient
from shared.drain import DrainSwitch
from shared.intake import Intake, utc_now
from shared.routing import RoutingRules, load_rules, parse_rules
from shared.rules_store import RulesHolder
from shared.tools import ToolRegistry

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "test-key"
DEPLOYMENT = "gpt-realtime-test"


def tool_registry() -> ToolRegistry:
    reg = ToolRegistry()

    @reg.register("lookup_order", description="Look up an order by id", parameters={
        "type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]})
    async def lookup_order(order_id: str) -> dict:
        return {"order_id": order_id, "status": "shipped"}

    return reg


def default_rules() -> RoutingRules:
    return load_rules(ROOT / "routing.json", tool_names={"lookup_order"}, max_call_duration_seconds=900)


@dataclass
class Workflow:
    """The Durable side as seen by the intake: start_call, call_exists, live_calls."""

    started: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    existing: set[str] = field(default_factory=set)
    live: int = 0
    live_queries: int = 0
    fail_start: bool = False
    start_delay: float = 0.0
    unstarted: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    fail_record: bool = False

    async def start_call(self, call_id: str, call_input: dict[str, Any]) -> None:
        if self.start_delay:
            await asyncio.sleep(self.start_delay)
        if self.fail_start:
            raise RuntimeError("durable task hub unavailable")
        self.started.append((call_id, call_input))
        self.existing.add(call_id)

    async def call_exists(self, call_id: str) -> bool:
        return call_id in self.existing

    async def live_calls(self) -> int:
        self.live_queries += 1
        return self.live

    async def record_unstarted(self, call_input: dict[str, Any], reason: str) -> None:
        if self.fail_record:
            raise ConnectionError("queue unreachable")
        self.unstarted.append((call_input, reason))

    def kwargs(self) -> dict[str, Any]:
        return {"start_call": self.start_call, "call_exists": self.call_exists, "live_calls": self.live_calls,
                "record_unstarted": self.record_unstarted}


def make_intake(url: str, secrets: tuple[str, ...], *, rules: RoutingRules | RulesHolder | dict | None = None,
                clock=utc_now, read_timeout: float = 2.0, max_call_duration_seconds: int = 900,
                admission: Admission | None = None, drain: DrainSwitch | None = None) -> Intake:
    if isinstance(rules, dict):
        rules = parse_rules(rules, tool_names={"lookup_order"}, max_call_duration_seconds=max_call_duration_seconds)
    timeout = httpx.Timeout(connect=1.0, read=read_timeout, write=1.0, pool=1.0)
    cc = CallControlClient(url, ApiKeyAuth(API_KEY), accept_timeout=timeout, timeout=timeout, backoff=(0.01,))
    return Intake(secrets=secrets, rules=rules or default_rules(), call_control=cc, deployment=DEPLOYMENT,
                  tools=tool_registry(), max_call_duration_seconds=max_call_duration_seconds, clock=clock,
                  admission=admission, drain=drain)


def fixed_clock(when: datetime):
    return lambda: when
