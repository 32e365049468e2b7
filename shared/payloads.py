"""The JSON payloads that cross modules and the Durable boundary: the orchestration input, the call summary and
the call record (docs/architecture.md describes each).

TypedDicts are types only: at run time each is a plain ``dict``, so Durable's JSON serialisation, the queue
message and every ``.get`` stay as they were, at no cost. Numbers in all three are masked (shared.phone.mask).
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class CallInput(TypedDict):
    """The ``call`` orchestration's input (instance id = ``call_id``), built by the webhook (shared/intake.py) and
    handed as is to the ``converse`` activity."""

    call_id: str
    webhook_id: str
    accepted_at: str  # ISO 8601 UTC, microseconds, "Z"
    caller: str | None  # masked; None when the platform did not say
    dialed: str | None
    profile_name: str
    profile: dict[str, Any]  # AgentProfile.to_json()
    max_duration_seconds: int


class Turn(TypedDict):
    role: str  # "caller" | "agent"
    text: str
    at: str


class TokenUsage(TypedDict):
    input_tokens: int
    output_tokens: int
    total_tokens: int


class CallSummary(TypedDict):
    """What the conversation engine returns for one call (the ``converse`` activity's output)."""

    call_id: str
    outcome: str  # completed | caller_hung_up | agent_ended | transferred | timed_out | idle | failed
    reason: str
    started_at: str
    ended_at: str
    duration_seconds: float
    transcript: list[Turn]
    tools: list[dict[str, Any]]  # {"name", "arguments", "ok", "at", "latency_ms"}
    digits: str
    usage: TokenUsage
    transfer_target: str | None
    # What the platform told the engine about the end of the call (docs/architecture.md, "Ending a call").
    hangup_confirmed: bool
    call_gone: bool
    refer_accepted: bool
    greeting_ms: float | None


class EndedEarly(TypedDict):
    """The stand-in summary of an accepted call whose engine never ran (its orchestration could not start)."""

    outcome: str
    reason: str


class CallRecord(TypedDict):
    """The published record of one call, answered or not (shared/records.py; schema ``SCHEMA`` there)."""

    schema: str
    id: str
    call_id: str
    outcome: str
    ended_by: str
    reason: str
    accepted_at: str | None
    ended_at: str
    duration_seconds: float | None
    caller: str | None
    dialed: str | None
    profile_name: str | None
    transfer_target: str | None
    transcript: list[Turn]
    tools: list[dict[str, Any]]
    digits: str
    usage: TokenUsage
    voice: str | None
    hangup_confirmed: bool | None
    greeting_ms: float | None
    sip_status: int | None
    analysis: NotRequired[dict[str, Any] | None]  # post-call analysis, when the profile asks for one (docs/analysis.md)
    analysis_error: NotRequired[str]
