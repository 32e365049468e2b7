"""POST /api/calls/incoming: the platform's signed `realtime.call.incoming` webhook.

Anonymous, because the platform cannot send a function key, and therefore always signature-checked by
the intake before anything else happens. This module only adapts the Functions request and the Durable
client to the framework-free intake in shared/.
"""

from __future__ import annotations

import json
import logging

import azure.durable_functions as df
import azure.functions as func

from call_workflow import runtime
from call_workflow import call_status
from call_workflow.orchestrator import ORCHESTRATOR

bp = df.Blueprint()
log = logging.getLogger("switchboard.incoming")
# How long the platform should wait before redelivering while the webhook's secret is unusable. The Key Vault
# reference is resolved within minutes of the post-provision hook (docs/deploy.md).
UNAVAILABLE_RETRY_AFTER_SECONDS = 30


@bp.route(route="calls/incoming", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@bp.durable_client_input(client_name="client")
async def incoming_call(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    app = await runtime.get()
    if app.intake is None:
        # The signing secret is unusable (say, a Key Vault reference not resolved yet): nothing can be verified, so
        # nothing is accepted. 503 makes the platform redeliver; the other functions run as usual.
        error = app.webhook_error
        log.error("webhook answered 503: %s", error)
        body = {"error": "webhook_unavailable", "setting": getattr(error, "setting", None)}
        return func.HttpResponse(json.dumps(body), status_code=503, mimetype="application/json",
                                 headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)})

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
    return func.HttpResponse(json.dumps(result.body), status_code=result.status, mimetype="application/json")
