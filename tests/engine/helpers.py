"""Helpers of the engine tests: place and accept a call on the emulator, run the engine, read what it sent."""

from __future__ import annotations

import copy
import time
from typing import Annotated, Any, get_args

import httpx
from openai.types.realtime import RealtimeClientEvent
from pydantic import Field, TypeAdapter

from emulator import Emulator
from shared.auth import ApiKeyAuth
from shared.call_control import CallControlClient
from shared.conversation import EngineOptions, converse
from shared.tools import ToolRegistry
from shared.transcript import iso, utc_now
from shared.turns import TurnStore

KEY = "test-key"

# Reference §5.4: the `type` discriminator makes pydantic reject beta names and missing fields precisely.
STRICT_CLIENT = TypeAdapter(Annotated[get_args(RealtimeClientEvent)[0], Field(discriminator="type")])

# Short bounds so the suite stays fast; the behaviour is the same as with the production defaults.
FAST = EngineOptions(
    goodbye_timeout_seconds=3.0,
    speech_start_grace_seconds=0.5,
    close_wait_seconds=2.0,
    transfer_settle_seconds=2.0,
    reconnect_delays=(0.0, 0.05, 0.1, 0.2),
    open_timeout_seconds=3.0,
    digit_batch_seconds=0.2,
    response_queue_timeout_seconds=3.0,
    turn_linger_seconds=0.2,
)

PROFILE: dict[str, Any] = {
    "instructions": "You are Alex, a friendly receptionist for Example Corp.",
    "voice": "marin",
    "greeting": "Thank you for calling Example Corp. How can I help?",
    "transcription": {"model": "gpt-4o-mini-transcribe", "language": "en"},
    "turn_detection": {"type": "server_vad", "idle_timeout_ms": 8000},
    "tools": [],
    "transfer_targets": {"sales": "tel:+14155550123", "support": "sip:support@example.com"},
    "closing_seconds": 20,
    "closing_line": "We are nearly out of time; please wrap up in a sentence.",
    "silence": {"prompt": "Hello? Are you still on the line?", "goodbye": "I'll hang up now. Goodbye!"},
    "digits": {"mode": "model"},
}


def profile(**overrides: Any) -> dict[str, Any]:
    p = copy.deepcopy(PROFILE)
    p.update(overrides)
    return p


def accept_body(prof: dict[str, Any], registry: ToolRegistry) -> dict[str, Any]:
    """What the webhook path (shared/intake.py) sends on accept: GA schema, no audio formats."""
    tools = registry.for_profile(prof.get("tools") or [], prof.get("transfer_targets") or {})
    return {
        "type": "realtime", "model": "gpt-realtime", "instructions": prof["instructions"],
        "audio": {"input": {"transcription": prof["transcription"], "turn_detection": prof["turn_detection"]},
                  "output": {"voice": prof["voice"]}},
        "tools": [t.schema() for t in tools], "tool_choice": "auto",
    }


class RecordingCallControl:
    """The real REST client, plus a log of what the engine asked for and when (unix time)."""

    def __init__(self, inner: CallControlClient) -> None:
        self.inner = inner
        self.requests: list[tuple[float, str, str | None]] = []

    async def hangup(self, call_id: str):  # noqa: ANN201
        self.requests.append((time.time(), "hangup", None))
        return await self.inner.hangup(call_id)

    async def refer(self, call_id: str, target_uri: str):  # noqa: ANN201
        self.requests.append((time.time(), "refer", target_uri))
        return await self.inner.refer(call_id, target_uri)

    def actions(self) -> list[str]:
        return [a for _, a, _ in self.requests]


class Harness:
    def __init__(self, emu: Emulator, registry: ToolRegistry | None = None, turns: TurnStore | None = None,
                 options: EngineOptions = FAST) -> None:
        self.emu = emu
        self.registry = registry or ToolRegistry()
        self.turns = turns
        self.options = options
        self.auth = ApiKeyAuth(KEY)
        self.control = RecordingCallControl(CallControlClient(emu.http_url, self.auth, backoff=(0.0,)))

    async def start_call(self, scenario: dict[str, Any], prof: dict[str, Any] | None = None,
                         max_duration_seconds: float = 60) -> dict[str, Any]:
        """Place a call, accept it over REST and return the orchestration input (docs/architecture.md)."""
        prof = prof or profile()
        call_id = await self.emu.place_call(scenario)
        async with httpx.AsyncClient() as http:
            r = await http.post(f"{self.emu.http_url}/openai/v1/realtime/calls/{call_id}/accept",
                                json=accept_body(prof, self.registry), headers={"api-key": KEY})
            assert r.status_code == 200, r.text
        return {
            "call_id": call_id, "webhook_id": "wh_test", "accepted_at": iso(utc_now()),
            "caller": "+1425***1212", "dialed": "+1800***1212",
            "profile_name": "reception", "profile": prof, "max_duration_seconds": max_duration_seconds,
        }

    async def converse(self, call: dict[str, Any], **kw: Any) -> dict[str, Any]:
        kw.setdefault("options", self.options)
        return await converse(call, endpoint=self.emu.http_url, auth=self.auth, call_control=self.control,
                              tools=self.registry, turns=self.turns, **kw)

    async def aclose(self) -> None:
        await self.control.inner.aclose()

    # ---- what the emulator saw
    def client_events(self, call_id: str, etype: str | None = None) -> list[dict[str, Any]]:
        return [e for _, e in self.emu.calls[call_id].client_events if etype is None or e.get("type") == etype]

    def timed_client_events(self, call_id: str, etype: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, e) for t, e in self.emu.calls[call_id].client_events if e.get("type") == etype]

    def server_events(self, call_id: str, etype: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, e) for t, e in self.emu.calls[call_id].server_events if e.get("type") == etype]

    def instructions(self, call_id: str) -> list[str]:
        return [
            (e.get("response") or {}).get("instructions", "") for e in self.client_events(call_id, "response.create")
        ]

    def function_outputs(self, call_id: str) -> list[dict[str, Any]]:
        return [e["item"] for e in self.client_events(call_id, "conversation.item.create")
                if e["item"].get("type") == "function_call_output"]

    def validate_all(self, call_id: str) -> None:
        """Every client event the emulator received is a valid GA client event; session.update is SIP-safe."""
        for event in self.client_events(call_id):
            STRICT_CLIENT.validate_python(event)
            if event["type"] == "session.update":
                assert event["session"]["type"] == "realtime"
                audio = event["session"].get("audio") or {}
                assert "format" not in (audio.get("input") or {}) and "format" not in (audio.get("output") or {})


def scenario(steps: list[dict[str, Any]], *, rules: list[dict[str, Any]] | None = None,
             on_end: str = "hangup", **model: Any) -> dict[str, Any]:
    return {"script": {"steps": steps, "on_end": on_end},
            "model": {"rules": rules or [], "default_reply": "Okay.", **model}}
