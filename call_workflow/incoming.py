"""POST /api/calls/incoming: the platform's signed `realtime.call.incoming` webhook.

Anonymous, because the platform cannot send a function key, and therefore always signature-checked by
the intake before anything else happens. This module only adapts the Functions request and the Durable
client to the framework-free intake in shared/.
"""

from __future__ import annotations

import json

import azure.durable_functions as df
import azure.functions as func

from call_workflow import runtime
from call_workflow import call_status
from call_workflow.orchestrator import ORCHESTRATOR

bp = df.Blueprint()


@bp.route(route="calls/incoming", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@bp.durable_client_input(client_name="client")
async def incoming_call(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    app = await runtime.get()

    async def start_call(call_id: str, call_input: dict) -> None:
        await client.start_new(ORCHESTRATOR, call_id, call_input)

    async def call_exists(call_id: str) -> bool:
        status = await client.get_status(call_id)
        return status is not None and status.runtime_status is not None

    async def record_unstarted(call_input: dict, reason: str) -> None:
        await runtime.publish_record(call_input, {"outcome": "failed", "reason": reason}, "start_failed")

    async def live_calls() -> int:
        return len(await call_status.live_calls(client))

    result = await app.intake.handle(
        req.get_body(),
        dict(req.headers),
        start_call=start_call,
        call_exists=call_exists,
        live_calls=live_calls,
        record_unstarted=record_unstarted,
    )
    # Server-Timing (a W3C header): how long each step of the ring path took, for benchmarks and dashboards.
    timing = ", ".join(f"{name};dur={ms:.2f}" for name, ms in result.timings.items())
    return func.HttpResponse(json.dumps(result.body), status_code=result.status, mimetype="application/json",
                             headers={"Server-Timing": timing} if timing else None)
