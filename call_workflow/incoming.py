"""POST /api/calls/incoming: the platform's signed `realtime.call.incoming` webhook.

Anonymous, because the platform cannot send a function key, and therefore always signature-checked by
the intake before anything else happens. This module only adapts the Functions request and the Durable
client to the framework-free intake in shared/.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

import azure.durable_functions as df
import azure.functions as func

from call_workflow import runtime
from call_workflow.orchestrator import ORCHESTRATOR, SUMMARY_WAIT_SECONDS, call_deadline, hangup_give_up_at
from shared import telemetry
from shared.payloads import CallInput

bp = df.Blueprint()
log = logging.getLogger("switchboard.incoming")
# How long the platform should wait before redelivering while the webhook's secret is unusable. The Key Vault
# reference is resolved within minutes of the post-provision hook (docs/deploy.md).
UNAVAILABLE_RETRY_AFTER_SECONDS = 30

# A live-calls row outlives the latest moment its call can be on the line: the orchestrator's deadline (max
# duration + grace) plus the summary wait after the hangup and a minute, or, while a failing hangup is still
# retried, the moment the orchestrator gives up on it (the platform's session cap).
LIVE_ROW_SLACK = dt.timedelta(seconds=SUMMARY_WAIT_SECONDS + 60)


@bp.route(route="api/calls/incoming", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@bp.durable_client_input(client_name="client")
async def incoming_call(req: func.HttpRequest, client: df.DurableOrchestrationClient,
                        context: func.Context) -> func.HttpResponse:
    # The invocation's span is the root of the call's trace: start_new sends it on as traceparent (the Durable
    # client injects the current context), so the orchestration and its activities join it.
    with telemetry.invocation("webhook", context.trace_context):
        return await _incoming_call(req, client)


async def _incoming_call(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    app = await runtime.get()
    if app.intake is None:
        # The signing secret is unusable (say, a Key Vault reference not resolved yet): nothing can be verified, so
        # nothing is accepted. 503 makes the platform redeliver; the other functions run as usual.
        error = app.webhook_error
        log.error("webhook answered 503: %s", error)
        body = {"error": "webhook_unavailable", "setting": getattr(error, "setting", None)}
        return func.HttpResponse(json.dumps(body), status_code=503, mimetype="application/json",
                                 headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)})

    async def start_call(call_id: str, call_input: CallInput) -> None:
        await client.start_new(ORCHESTRATOR, call_id, call_input)
        # Counted from now on (the call is live); publish_call_record removes the row when it ends.
        try:
            expires = max(call_deadline(call_input) + LIVE_ROW_SLACK, hangup_give_up_at(call_input))
            await app.live.add(call_id, expires)
        except Exception as exc:  # noqa: BLE001 - the call goes on; only the capacity count misses it
            log.warning("call %s: not added to the live-calls table (%s)", call_id, type(exc).__name__)

    async def call_exists(call_id: str) -> bool:
        status = await client.get_status(call_id)
        return status is not None and status.runtime_status is not None

    async def record_unstarted(call_input: CallInput, reason: str) -> None:
        await runtime.publish_record(call_input, {"outcome": "failed", "reason": reason}, "start_failed")

    async def live_calls() -> int:
        # A small table of the calls live now, not a scan of the task hub's history (shared/live_calls.py).
        return await app.live.count(dt.datetime.now(dt.UTC))

    result = await app.intake.handle(
        req.get_body(),
        dict(req.headers),
        start_call=start_call,
        call_exists=call_exists,
        live_calls=live_calls,
        record_unstarted=record_unstarted,
    )
    if result.declined is not None:
        # After the reject/refer landed, off the answer's path: a record for every decision (its own errors).
        runtime.publish_declined(result.declined)
    # Server-Timing (a W3C header): how long each step of the ring path took, for benchmarks and dashboards.
    timing = ", ".join(f"{name};dur={ms:.2f}" for name, ms in result.timings.items())
    return func.HttpResponse(json.dumps(result.body), status_code=result.status, mimetype="application/json",
                             headers={"Server-Timing": timing} if timing else None)
