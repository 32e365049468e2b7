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
from call_workflow.orchestrator import ORCHESTRATOR, SUMMARY_WAIT_SECONDS, call_deadline

bp = df.Blueprint()
log = logging.getLogger("switchboard.incoming")

# A live-calls row outlives the latest moment its call can be on the line: the orchestrator's deadline (max
# duration + grace), the summary wait after the hangup, and a minute for the hangup's own retries.
LIVE_ROW_SLACK = dt.timedelta(seconds=SUMMARY_WAIT_SECONDS + 60)


@bp.route(route="calls/incoming", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@bp.durable_client_input(client_name="client")
async def incoming_call(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    app = await runtime.get()

    async def start_call(call_id: str, call_input: dict) -> None:
        await client.start_new(ORCHESTRATOR, call_id, call_input)
        # Counted from now on (the call is live); publish_call_record removes the row when it ends.
        try:
            await app.live.add(call_id, call_deadline(call_input) + LIVE_ROW_SLACK)
        except Exception as exc:  # noqa: BLE001 - the call goes on; only the capacity count misses it
            log.warning("call %s: not added to the live-calls table (%s)", call_id, type(exc).__name__)

    async def call_exists(call_id: str) -> bool:
        status = await client.get_status(call_id)
        return status is not None and status.runtime_status is not None

    async def record_unstarted(call_input: dict, reason: str) -> None:
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
    return func.HttpResponse(json.dumps(result.body), status_code=result.status, mimetype="application/json")
