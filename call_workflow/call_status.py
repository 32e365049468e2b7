"""What a `call` orchestration's Durable status says about the call: shared by the webhook and the operator API."""
from __future__ import annotations

import asyncio
import json
import weakref
from typing import Any

import httpx
from azure.durable_functions.models.DurableOrchestrationStatus import DurableOrchestrationStatus

from call_workflow.orchestrator import LIVE_STATUSES, ORCHESTRATOR, STATE_ENDED

_LIVE_NAMES = {s.value for s in LIVE_STATUSES}
_CONTINUATION = "x-ms-continuation-token"
PAGE_SIZE = 100  # the Durable HTTP API's own page size
MAX_PAGES = 1000
# One keep-alive client per event loop for the host's loopback Durable API (httpx clients are loop-bound).
_http: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = weakref.WeakKeyDictionary()


def _client() -> httpx.AsyncClient:
    loop = asyncio.get_running_loop()
    client = _http.get(loop)
    if client is None:
        client = _http[loop] = httpx.AsyncClient(timeout=httpx.Timeout(5.0))
    return client


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


async def live_calls(client: Any) -> list[DurableOrchestrationStatus]:
    """Every live `call` orchestration, without inputs, from the host's Durable HTTP API.

    Not the SDK's ``get_status_by``: it reads only the first page (100 instances) and cannot ask to leave the
    inputs out (each carries its profile, up to tens of KB), which this listing does not need.

    For the operator API only. With the Azure Storage provider a status filter scans every instance ever created,
    so the webhook's capacity count reads the live-calls table instead (shared/live_calls.py).
    """
    # The SDK keeps the host's RPC address private; without one (an old host), fall back to its first page.
    rpc_base_url = getattr(getattr(client, "_orchestration_bindings", None), "rpc_base_url", None)
    if not rpc_base_url:
        statuses = await client.get_status_by(runtime_status=LIVE_STATUSES)
        return [s for s in statuses if (not s.name or s.name == ORCHESTRATOR) and is_live(s)]
    params = {"runtimeStatus": ",".join(_LIVE_NAMES), "showInput": "false", "top": str(PAGE_SIZE)}
    found: list[DurableOrchestrationStatus] = []
    token = None
    for _ in range(MAX_PAGES):
        response = await _client().get(f"{rpc_base_url}instances/", params=params,
                                  headers={_CONTINUATION: token} if token else None)
        response.raise_for_status()
        for item in response.json():
            status = DurableOrchestrationStatus.from_json(item)
            if (not status.name or status.name == ORCHESTRATOR) and is_live(status):
                found.append(status)
        token = response.headers.get(_CONTINUATION)
        if not token or token in ("null", "bnVsbA=="):  # some backends send "null" (base64 or not) on the last page
            break
    return found
