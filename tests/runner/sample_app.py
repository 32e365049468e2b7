"""A tiny v2 app for the runner's HTTP-layer tests: routes, methods, auth levels, a Durable client."""

from __future__ import annotations

import json

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)


def _json(body, status=200):
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


@app.route(route="items/{item_id:int}", methods=["GET"])
def get_item(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"route": "int", "item_id": req.route_params["item_id"], "q": req.params.get("q")})


@app.route(route="items/special", methods=["GET"])
def special_item(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"route": "literal"})


@app.route(route="items/{name}", methods=["GET", "DELETE"])
async def named_item(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"route": "name", "name": req.route_params["name"], "method": req.method})


@app.route(route="echo", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def echo(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(req.get_body(), status_code=201, headers={"X-Echo": req.headers.get("x-test", "")},
                             mimetype="application/octet-stream")


@app.route(route="files/{*path}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def files(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"path": req.route_params.get("path")})


@app.route(route="boom", auth_level=func.AuthLevel.ANONYMOUS)
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("the function failed")


@app.route(route="secret", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
def secret(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"secret": True})


# --- Durable: an orchestrator that calls an activity, then waits for "go" (or is terminated) ---------------

@app.orchestration_trigger(context_name="context")
def waiter(context: df.DurableOrchestrationContext):
    data = context.get_input() or {}
    doubled = yield context.call_activity("double", data.get("n", 0))
    context.set_custom_status({"state": "waiting", "doubled": doubled})
    go = yield context.wait_for_external_event("go")
    context.set_custom_status({"state": "done"})
    return {"doubled": doubled, "go": go}


@app.activity_trigger(input_name="n")
def double(n: int) -> int:
    return n * 2


@app.route(route="start/{name}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def start(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    body = req.get_json() if req.get_body() else None
    instance_id = await client.start_new(req.route_params["name"], req.params.get("id"), body)
    return client.create_check_status_response(req, instance_id)


@app.route(route="status/{instance_id}", methods=["GET"])
@app.durable_client_input(client_name="client")
async def status(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    s = await client.get_status(req.route_params["instance_id"], show_input=True)
    if not s:
        return _json({"found": False}, 404)
    return _json({"found": True, **s.to_json(), "input": s.input_})


@app.route(route="running", methods=["GET"])
@app.durable_client_input(client_name="client")
async def running(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    live = await client.get_status_by(runtime_status=[df.OrchestrationRuntimeStatus.Running,
                                                      df.OrchestrationRuntimeStatus.Pending])
    every = await client.get_status_all()
    return _json({"running": sorted(s.instance_id for s in live), "all": sorted(s.instance_id for s in every)})


@app.route(route="raise/{instance_id}/{event}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def raise_event(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    try:
        await client.raise_event(req.route_params["instance_id"], req.route_params["event"], req.get_json())
    except Exception as exc:  # the SDK's own error messages, per status code
        return _json({"error": str(exc)}, 409)
    return _json({"raised": True}, 202)


@app.route(route="terminate/{instance_id}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def terminate(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    try:
        await client.terminate(req.route_params["instance_id"], "operator says stop")
    except Exception as exc:
        return _json({"error": str(exc)}, 409)
    return _json({"terminated": True}, 202)
