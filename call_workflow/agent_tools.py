"""Example user tools: the functions the voice agent may call during a call.

This is where you plug in your own systems. A tool is a plain async function registered with a JSON schema for
its arguments; a profile in routing.json offers it to the model by name (``"tools": ["lookup_order"]``).

Rules the engine applies (shared/conversation.py):
- the keyword arguments are the model's JSON arguments;
- the return value is sent back to the model as JSON (dicts, lists, strings, numbers);
- ``raise ToolError("message")`` gives the model that message as ``{"error": ...}``; any other exception, or
  running past ``timeout_seconds``, gives it a generic error. Either way the call goes on;
- keep tools quick: the caller is listening to silence while a tool runs.
"""

from __future__ import annotations

import hashlib
from datetime import date, timedelta
from typing import Any

from shared.tools import ToolError, registry

_STATUSES = ("processing", "shipped", "out for delivery", "delivered")


@registry.register(
    "lookup_order",
    description="Look up the status of a customer's order by its order number.",
    parameters={
        "type": "object",
        "properties": {"order_id": {"type": "string", "description": "The order number the caller gives."}},
        "required": ["order_id"],
        "additionalProperties": False,
    },
    timeout_seconds=5.0,
)
async def lookup_order(order_id: str) -> dict[str, Any]:
    # A stand-in for your order system: the status is derived from the id, so the same order always answers
    # the same way (handy for demos and tests). Replace the body with a call to your API.
    order_id = order_id.strip().lstrip("#")
    if not order_id.isalnum():
        raise ToolError("order numbers are letters and digits only")
    digest = hashlib.sha256(order_id.encode()).digest()
    status = _STATUSES[digest[0] % len(_STATUSES)]
    eta = date(2026, 12, 1) + timedelta(days=digest[1] % 10)
    return {"order_id": order_id, "status": status, "eta": eta.isoformat() if status != "delivered" else None}


@registry.register(
    "business_hours",
    description="Tell the caller the business opening hours.",
    parameters={"type": "object", "properties": {}, "additionalProperties": False},
)
async def business_hours() -> dict[str, Any]:
    return {"weekdays": "9am to 5pm", "weekends": "closed", "timezone": "America/New_York"}
