"""What a `call` orchestration's Durable status says about the call: shared by the webhook and the operator API."""
from __future__ import annotations

import json
from typing import Any

from call_workflow.orchestrator import LIVE_STATUSES, STATE_ENDED

_LIVE_NAMES = {s.value for s in LIVE_STATUSES}


def runtime_status(status: Any) -> str | None:
    rs = getattr(status, "runtime_status", None)
    return getattr(rs, "value", rs)


def _as_dict(value: Any, text_as: str | None = None) -> dict:
    # The SDK hands JSON values back parsed or as JSON text, depending on the field and the backend.
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = {text_as: value} if text_as else None
    return value if isinstance(value, dict) else {}


def custom_status(status: Any) -> dict:
    """The custom status as a dict (a plain string becomes ``{"state": text}``)."""
    return _as_dict(getattr(status, "custom_status", None), text_as="state")


def input_of(status: Any) -> dict:
    """The orchestration input (the call) as a dict; ``{}`` when absent or not an object."""
    return _as_dict(getattr(status, "input_", None))


def is_live(status: Any) -> bool:
    """The caller may still be on the line. An orchestration that is running but has ended the call (it is
    publishing the record, perhaps retrying for hours) holds no line: it must not count against capacity, be
    listed as live or take operator actions."""
    return runtime_status(status) in _LIVE_NAMES and custom_status(status).get("state") != STATE_ENDED
