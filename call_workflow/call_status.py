"""What a `call` orchestration's Durable status says about the call: shared by the webhook and the operator API."""
from __future__ import annotations

import json
from typing import Any

from call_workflow.orchestrator import LIVE_STATUSES, STATE_ENDED

_LIVE_NAMES = {s.value for s in LIVE_STATUSES}


def runtime_status(status: Any) -> str | None:
    rs = getattr(status, "runtime_status", None)
    return getattr(rs, "value", rs)


def custom_status(status: Any) -> dict:
    custom = getattr(status, "custom_status", None)
    if isinstance(custom, str):
        try:
            custom = json.loads(custom)
        except ValueError:
            custom = {"state": custom}
    return custom if isinstance(custom, dict) else {}


def is_live(status: Any) -> bool:
    """The caller may still be on the line. An orchestration that is running but has ended the call (it is
    publishing the record, perhaps retrying for hours) holds no line: it must not count against capacity, be
    listed as live or take operator actions."""
    return runtime_status(status) in _LIVE_NAMES and custom_status(status).get("state") != STATE_ENDED
