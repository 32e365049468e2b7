"""Post-call analysis against the emulator's chat completions endpoint, over real sockets.

The emulator checks the request as the service does and answers with a value generated from the schema it was
sent, so these tests prove the request (path, auth, strict json_schema) and the handling of the answer."""

from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace

import pytest
from jsonschema import Draft202012Validator
from openai.types.chat import ChatCompletion

from emulator.chat import sample
from emulator.testing import TEST_API_KEY
from shared.analysis import AnalysisClient, AnalysisError, response_schema
from shared.auth import ApiKeyAuth, EntraAuth

SPEC = {
    "summary": "One sentence.",
    "success": "Success when the caller got an answer.",
    "data": {
        "type": "object",
        "properties": {
            "reason": {"type": "string", "enum": ["order", "billing", "other"]},
            "order_number": {"type": ["string", "null"]},
            "follow_up": {"type": "boolean"},
            "count": {"type": "integer", "minimum": 2},
        },
        "required": ["reason", "order_number", "follow_up", "count"],
        "additionalProperties": False,
    },
}
CALL = {"call_id": "rtc_1", "caller": "+1425***1212", "dialed": "+1800***1212", "profile_name": "reception",
        "accepted_at": "2026-11-25T12:00:00.000000Z"}
TURNS = [{"role": "caller", "text": "Where is my order? Call me on 425 555 1212."},
         {"role": "agent", "text": "It ships tomorrow."}]


def client(emulator, **kw) -> AnalysisClient:
    kw.setdefault("backoff", (0.05, 0.1))
    return AnalysisClient(emulator.http_url, "gpt-4.1-mini", kw.pop("auth", ApiKeyAuth(TEST_API_KEY)), **kw)


async def test_analysis_follows_the_schema_it_sent(emulator):
    c = client(emulator)
    try:
        result = await c.analyze(CALL, TURNS, SPEC)
    finally:
        await c.aclose()
    (request,) = emulator.chat.requests
    schema = request["response_format"]["json_schema"]["schema"]
    assert schema == response_schema(SPEC)
    # The emulator's answer is the deterministic sample of that schema, passed through untouched.
    expected = sample(schema, schema)
    assert result["data"] == expected["data"] == {"reason": "order", "order_number": "emulated order_number",
                                                 "follow_up": True, "count": 2}
    assert result["summary"] == expected["summary"]
    assert result["success"] == {"value": True, "reason": "emulated reason"}
    assert result["model"] == "gpt-4.1-mini" and isinstance(result["ms"], int)
    Draft202012Validator(SPEC["data"]).validate(result["data"])
    assert "4255551212" not in json.dumps(request["messages"]).replace(" ", "")


async def test_emulator_answer_is_a_chat_completion(emulator):
    import httpx

    from shared.analysis import build_request

    async with httpx.AsyncClient() as http:
        r = await http.post(emulator.http_url + "/openai/v1/chat/completions",
                            json=build_request("d", CALL, TURNS, SPEC), headers={"api-key": TEST_API_KEY})
    assert r.status_code == 200
    completion = ChatCompletion.model_validate(r.json())  # openai-python's own model of the answer
    assert completion.choices[0].finish_reason == "stop"
    Draft202012Validator(response_schema(SPEC)).validate(json.loads(completion.choices[0].message.content))


@pytest.mark.parametrize(("mutate", "param"), [
    (lambda b: b["response_format"]["json_schema"].update(strict=False), "response_format.json_schema"),
    (lambda b: b["response_format"]["json_schema"]["schema"].pop("additionalProperties"), "response_format"),
    (lambda b: b.update(response_format={"type": "json_object"}), "response_format.type"),
    (lambda b: b.pop("model"), "model"),
])
async def test_emulator_refuses_a_wrong_request(emulator, mutate, param):
    import httpx

    from shared.analysis import build_request

    body = build_request("d", CALL, TURNS, SPEC)
    mutate(body)
    async with httpx.AsyncClient() as http:
        r = await http.post(emulator.http_url + "/openai/v1/chat/completions", json=body,
                            headers={"api-key": TEST_API_KEY})
    assert r.status_code == 400 and r.json()["error"]["param"] == param


async def test_entra_token_is_sent_as_bearer(emulator_factory):
    emulator = await emulator_factory(api_key=None, bearer_token="entra-token-1")
    credential = SimpleNamespace(get_token=None)

    async def get_token(*scopes):
        return SimpleNamespace(token="entra-token-1", expires_on=time.time() + 3600)

    credential.get_token = get_token
    c = client(emulator, auth=EntraAuth(credential, "https://cognitiveservices.azure.com/.default"))
    try:
        assert (await c.analyze(CALL, TURNS, SPEC))["success"]["value"] is True
    finally:
        await c.aclose()
    wrong = client(emulator, auth=EntraAuth(credential, "s/.default"))
    emulator.config.bearer_token = "another"
    try:
        with pytest.raises(AnalysisError, match="HTTP 401"):
            await wrong.analyze(CALL, TURNS, SPEC)
    finally:
        await wrong.aclose()


async def test_server_errors_are_retried_within_the_budget(emulator):
    emulator.chat.fail = [500, 503]
    c = client(emulator)
    try:
        result = await c.analyze(CALL, TURNS, SPEC)
    finally:
        await c.aclose()
    assert len(emulator.chat.requests) == 3 and result["data"]["reason"] == "order"


async def test_persistent_errors_fail_with_the_status(emulator):
    emulator.chat.fail = [500, 500, 500, 500]
    c = client(emulator)
    try:
        with pytest.raises(AnalysisError, match="HTTP 500 after 3 attempts"):
            await c.analyze(CALL, TURNS, SPEC)
    finally:
        await c.aclose()


async def test_a_client_error_is_not_retried(emulator):
    emulator.chat.fail = [400]
    c = client(emulator)
    try:
        with pytest.raises(AnalysisError, match="HTTP 400"):
            await c.analyze(CALL, TURNS, SPEC)
    finally:
        await c.aclose()
    assert len(emulator.chat.requests) == 1


async def test_a_slow_deployment_hits_the_budget(emulator):
    emulator.chat.delay_s = 1.5
    c = client(emulator, budget_seconds=0.5, attempt_timeout=0.3)
    started = time.monotonic()
    try:
        with pytest.raises(AnalysisError):
            await c.analyze(CALL, TURNS, SPEC)
    finally:
        await c.aclose()
    assert time.monotonic() - started < 3.0  # the budget, not the deployment, decides how long it takes


async def test_a_refusal_is_an_error(emulator):
    emulator.chat.refuse = True
    c = client(emulator)
    try:
        with pytest.raises(AnalysisError, match="refused"):
            await c.analyze(CALL, TURNS, SPEC)
    finally:
        await c.aclose()


async def test_concurrent_analyses_share_the_client(emulator):
    c = client(emulator)
    try:
        results = await asyncio.gather(*(c.analyze(CALL, TURNS, SPEC) for _ in range(5)))
    finally:
        await c.aclose()
    assert len(results) == 5 and len(emulator.chat.requests) == 5
