"""Activities of the ``call`` orchestrator. Thin: the work is in ``shared/`` through
``call_workflow.runtime`` (process-wide clients).

| activity | input | output |
|---|---|---|
| ``converse`` | orchestration input | call summary |
| ``hangup_call`` | ``{"call_id", "reason"}`` | ``{"call_id", "gone"}`` (404 = success, gone) |
| ``refer_call`` | ``{"call_id", "target_uri"}`` | ``{"call_id", "gone"}`` |
| ``analyze_call`` | ``{"call", "summary"}`` | ``{"analysis"}`` (None when off; raises on failure) |
| ``publish_call_record`` | ``{"call", "summary", "ended_by", "ended_at", ...}`` | ``{"record_id"}`` |

``publish_call_record`` also takes ``transfer_target``, ``hangup_confirmed``, ``hung_up_at``, and ``analysis`` or
``analysis_error`` (docs/analysis.md).

Activities are at-least-once: each is idempotent by ``call_id`` (a retried ``converse``
reattaches to the same call and reloads its finished turns; hanging up or referring a
call that is already gone answers 404, which counts as done).
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable

import azure.durable_functions as df
import azure.functions as func

from shared import telemetry

bp = df.Blueprint()


def _traced(fn: Callable[[dict], Awaitable[dict]]) -> Callable[[dict, func.Context], Awaitable[dict]]:
    """Runs the activity in a span that is a child of its invocation's trace context (``context.trace_context``;
    in Azure the Durable host's distributed tracing V2 links it to the orchestration, and so to the webhook that
    started it; locally the runner does the same, docs/observability.md), with the call id on its log lines.

    The wrapper declares ``context`` so the worker passes the invocation context; it keeps the activity's name
    but not ``__wrapped__``, which would make the worker read the inner signature (without ``context``)."""

    async def activity(payload: dict, context: func.Context) -> dict:
        nested = payload.get("call")
        call = nested if isinstance(nested, dict) else payload
        with telemetry.invocation(f"activity.{fn.__name__}", context.trace_context, call_id=call.get("call_id")):
            return await fn(payload)

    activity.__name__ = activity.__qualname__ = fn.__name__
    activity.__doc__, activity.__module__ = fn.__doc__, fn.__module__
    return activity


def _runtime():
    # Imported lazily: the runtime reads settings and routing rules on first use.
    from call_workflow import runtime

    return runtime


@bp.activity_trigger(input_name="payload")
@_traced
async def converse(payload: dict) -> dict:
    return await _runtime().converse(payload)


@bp.activity_trigger(input_name="payload")
@_traced
async def hangup_call(payload: dict) -> dict:
    control = await _runtime().call_control()
    result = await control.hangup(payload["call_id"])  # raises CallControlError unless 2xx/404
    return {"call_id": payload["call_id"], "gone": bool(result.gone)}


@bp.activity_trigger(input_name="payload")
@_traced
async def refer_call(payload: dict) -> dict:
    control = await _runtime().call_control()
    result = await control.refer(payload["call_id"], payload["target_uri"])
    return {"call_id": payload["call_id"], "gone": bool(result.gone)}


@bp.activity_trigger(input_name="payload")
@_traced
async def analyze_call(payload: dict) -> dict:
    # Its own retries and time budget are inside (shared/analysis.py); idempotent: it only reads and asks.
    return await _runtime().analyze(payload["call"], payload.get("summary"))


@bp.activity_trigger(input_name="payload")
@_traced
async def publish_call_record(payload: dict) -> dict:
    # The first step after the call ended: it no longer counts against capacity.
    await _runtime().call_ended(payload["call"]["call_id"])
    record_id = await _runtime().publish_record(payload["call"], payload.get("summary"), payload["ended_by"],
                                                payload.get("transfer_target"), payload.get("ended_at"),
                                                payload.get("hangup_confirmed"), payload.get("hung_up_at"),
                                                payload.get("analysis"), payload.get("analysis_error"))
    return {"record_id": record_id}
