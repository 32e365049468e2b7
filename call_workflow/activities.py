"""Activities of the ``call`` orchestrator. Thin: the work is in ``shared/`` through
``call_workflow.runtime`` (process-wide clients).

| activity | input | output |
|---|---|---|
| ``converse`` | orchestration input | call summary |
| ``hangup_call`` | ``{"call_id", "reason"}`` | ``{"call_id", "gone"}`` (404 = success, gone) |
| ``refer_call`` | ``{"call_id", "target_uri"}`` | ``{"call_id", "gone"}`` |
| ``publish_call_record`` | ``{"call", "summary", "ended_by", "transfer_target", "ended_at", "hangup_confirmed", "hung_up_at"}`` | ``{"record_id"}`` |

Activities are at-least-once: each is idempotent by ``call_id`` (a retried ``converse``
reattaches to the same call and reloads its finished turns; hanging up or referring a
call that is already gone answers 404, which counts as done).
"""
from __future__ import annotations

import azure.durable_functions as df

bp = df.Blueprint()


def _runtime():
    # Imported lazily: the runtime reads settings and routing rules on first use.
    from call_workflow import runtime

    return runtime


@bp.activity_trigger(input_name="payload")
async def converse(payload: dict) -> dict:
    return await _runtime().converse(payload)


@bp.activity_trigger(input_name="payload")
async def hangup_call(payload: dict) -> dict:
    control = await _runtime().call_control()
    result = await control.hangup(payload["call_id"])  # raises CallControlError unless 2xx/404
    return {"call_id": payload["call_id"], "gone": bool(result.gone)}


@bp.activity_trigger(input_name="payload")
async def refer_call(payload: dict) -> dict:
    control = await _runtime().call_control()
    result = await control.refer(payload["call_id"], payload["target_uri"])
    return {"call_id": payload["call_id"], "gone": bool(result.gone)}


@bp.activity_trigger(input_name="payload")
async def publish_call_record(payload: dict) -> dict:
    record_id = await _runtime().publish_record(payload["call"], payload.get("summary"), payload["ended_by"],
                                                payload.get("transfer_target"), payload.get("ended_at"),
                                                payload.get("hangup_confirmed"), payload.get("hung_up_at"))
    return {"record_id": record_id}
