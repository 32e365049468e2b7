"""How a call ended: the outcome names, and the one rule that picks a finished call's outcome.

Pure and dependency-free, so the deterministic orchestrator (its custom status and result) and the record
builder use the same rule and can never disagree.
"""

from __future__ import annotations

from typing import Any

OUTCOMES = ("completed", "caller_hung_up", "agent_ended", "transferred", "timed_out", "idle", "failed")

# The orchestrator's own endings; any other ``ended_by`` keeps the engine's outcome.
_OUTCOME_BY_ENDER = {"operator_transfer": "transferred", "max_duration": "timed_out"}


def call_outcome(summary: dict[str, Any] | None, ended_by: str) -> str:
    """When the orchestrator ended the call, its action decides: the engine only saw the socket close and would
    call an operator transfer ``completed``. Otherwise the engine's outcome; ``failed`` without a summary."""
    engine_outcome = (summary or {}).get("outcome") or "failed"
    return _OUTCOME_BY_ENDER.get(ended_by, engine_outcome)
