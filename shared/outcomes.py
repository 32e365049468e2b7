"""How a call ended: the outcome names, the one rule that picks a finished call's outcome, and the rule that says
whether a summary proves the platform already ended the call (so the orchestrator need not hang up).

Pure and dependency-free, so the deterministic orchestrator (its custom status and result) and the record
builder use the same rule and can never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

OUTCOMES = ("completed", "caller_hung_up", "agent_ended", "transferred", "timed_out", "idle", "failed")

# The orchestrator's own endings; any other ``ended_by`` keeps the engine's outcome.
_OUTCOME_BY_ENDER = {"operator_transfer": "transferred", "max_duration": "timed_out"}


def call_outcome(summary: Mapping[str, Any] | None, ended_by: str) -> str:
    """When the orchestrator ended the call, its action decides: the engine only saw the socket close and would
    call an operator transfer ``completed``. Otherwise the engine's outcome; ``failed`` without a summary."""
    engine_outcome = (summary or {}).get("outcome") or "failed"
    return _OUTCOME_BY_ENDER.get(ended_by, engine_outcome)


def platform_ended(summary: dict[str, Any] | None) -> bool:
    """True when converse's summary proves the platform itself ended the call, so no hangup is needed: converse's
    own ``/hangup`` was confirmed (2xx, or 404 for a call already gone), the platform answered 404 for the call
    (sideband reconnect after the caller hung up, a REFER), or it accepted a REFER and the call left. Anything
    else (a failed hangup, a socket that only closed, a summary from older code without these fields) is not
    proof; the orchestrator then hangs up, and a gone call answers 404, which counts as done."""
    if not isinstance(summary, dict):
        return False
    return any(summary.get(fact) is True for fact in ("hangup_confirmed", "call_gone", "refer_accepted"))
