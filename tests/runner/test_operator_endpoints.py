"""Operator endpoints (`call_workflow.operator`) served by the runner, called through real sockets."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from call_workflow.operator import OperatorError, parse_transfer_target
from tests.runner.conftest import start_host
from tests.runner.operator_app import app as operator_app

FKEY = {"x-functions-key": "fkey-test"}
PROFILE = {"greeting": "Hi", "transfer_targets": {"sales": "tel:+14155550123", "support": "sip:support@example.com"}}


def call_input(call_id: str) -> dict:
    return {"call_id": call_id, "webhook_id": "wh_1", "accepted_at": "2026-01-01T00:00:00.000000Z",
            "caller": "+1425***1212", "dialed": "+1800***1212", "profile_name": "reception", "profile": PROFILE,
            "max_duration_seconds": 60}


@pytest.fixture
async def host():
    h = await start_host(operator_app, route_prefix="")  # the real operator routes: api/calls/...
    yield h
    await h.stop()


async def start_call(host, call_id: str) -> None:
    await host.engine.start_new("call", call_id, call_input(call_id))
    for _ in range(200):
        status = host.engine.get_status(call_id)
        if status and status.get("customStatus"):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the call never set its custom status")


async def test_endpoints_need_the_function_key(host, http):
    for method, route in [
        ("GET", "api/calls"),
        ("GET", "api/calls/x"),
        ("POST", "api/calls/x/hangup"),
        ("POST", "api/calls/x/transfer"),
    ]:
        async with http.request(method, host.url_for(route)) as r:
            assert r.status == 401, route
            body = await r.json()  # says what is missing, not an empty body
        assert body["error"] == "unauthorized" and body["needs"] == "a function key (or the master key)", body
        assert "no key was given: send it in the x-functions-key header or as ?code=" in body["message"], body


async def test_a_wrong_key_is_told_apart_from_a_missing_one_and_never_echoed(host, http):
    wrong = "not-the-key-" + "x" * 20
    for headers, query in [({"x-functions-key": wrong}, ""), ({}, f"?code={wrong}")]:
        async with http.get(host.url_for("api/calls") + query, headers=headers) as r:
            assert r.status == 401
            text = await r.text()
        assert "the key given is not valid" in text and wrong not in text, text


async def test_listing_live_calls_shows_custom_status_and_never_full_numbers(host, http):
    async with http.get(host.url_for("api/calls"), headers=FKEY) as r:
        assert r.status == 200 and await r.json() == {"calls": []}
    await start_call(host, "rtc_a")
    await start_call(host, "rtc_b")
    async with http.get(host.url_for("api/calls"), headers=FKEY) as r:
        body = await r.json()
    assert [c["call_id"] for c in body["calls"]] == ["rtc_a", "rtc_b"]
    first = body["calls"][0]
    assert first["state"] == "live" and first["caller"] == "+1425***1212" and first["profile"] == "reception"
    assert first["runtime_status"] == "Running" and "created_at" in first
    assert "transfer_targets" not in str(body) and "tel:" not in str(body)
    async with http.get(host.url_for("api/calls/rtc_a"), headers=FKEY) as r:
        assert r.status == 200
        assert (await r.json())["call_id"] == "rtc_a"


async def test_unknown_call_is_404_everywhere(host, http):
    async with http.get(host.url_for("api/calls/rtc_nope"), headers=FKEY) as r:
        assert r.status == 404 and "rtc_nope" in (await r.json())["error"]
    async with http.post(host.url_for("api/calls/rtc_nope/hangup"), headers=FKEY) as r:
        assert r.status == 404
    async with http.post(host.url_for("api/calls/rtc_nope/transfer"), json={"target": "sales"}, headers=FKEY) as r:
        assert r.status == 404


async def test_hangup_raises_the_hangup_event(host, http):
    await start_call(host, "rtc_h")
    async with http.post(host.url_for("api/calls/rtc_h/hangup"), headers=FKEY) as r:
        assert r.status == 202
        assert await r.json() == {"call_id": "rtc_h", "requested": "hangup"}
    status = await host.engine.wait_for_completion("rtc_h", 5)
    assert status["output"] == {"event": "hangup", "data": {"by": "operator"}}
    # The call is over now: 409 with a reason, and it is no longer listed.
    async with http.post(host.url_for("api/calls/rtc_h/hangup"), headers=FKEY) as r:
        assert r.status == 409 and "over" in (await r.json())["error"]
    async with http.get(host.url_for("api/calls"), headers=FKEY) as r:
        assert (await r.json())["calls"] == []


async def test_a_call_that_ended_but_still_publishes_its_record_is_not_live(host, http):
    await start_call(host, "rtc_e")
    await host.engine.raise_event("rtc_e", "ended", None)
    for _ in range(200):
        if host.engine.get_status("rtc_e")["customStatus"]["state"] == "ended":
            break
        await asyncio.sleep(0.01)
    assert host.engine.get_status("rtc_e")["runtimeStatus"] == "Running"
    async with http.get(host.url_for("api/calls"), headers=FKEY) as r:
        assert (await r.json())["calls"] == []
    async with http.get(host.url_for("api/calls/rtc_e"), headers=FKEY) as r:
        view = await r.json()
    assert view["state"] == "ended" and view["runtime_status"] == "Running"
    async with http.post(host.url_for("api/calls/rtc_e/hangup"), headers=FKEY) as r:
        assert r.status == 409 and "over" in (await r.json())["error"]
    async with http.post(host.url_for("api/calls/rtc_e/transfer"), json={"target": "sales"}, headers=FKEY) as r:
        assert r.status == 409
    await host.engine.raise_event("rtc_e", "published", None)
    assert (await host.engine.wait_for_completion("rtc_e", 5))["output"] == {"event": "ended"}


async def test_listing_reads_every_page_and_leaves_ended_calls_out(host, http, monkeypatch):
    # The Durable API pages its answers (100 per page in Azure); the SDK's get_status_by reads only the first.
    from call_workflow import call_status

    monkeypatch.setattr(call_status, "PAGE_SIZE", 7)
    ids = [f"rtc_p{i:02d}" for i in range(30)]
    for call_id in ids:
        await start_call(host, call_id)
    for call_id in ids[:4]:
        await host.engine.raise_event(call_id, "ended", None)
    for _ in range(200):
        if all(host.engine.get_status(c)["customStatus"]["state"] == "ended" for c in ids[:4]):
            break
        await asyncio.sleep(0.01)
    requests = []

    async def record(request):
        requests.append(dict(request.url.params))

    client = httpx.AsyncClient(event_hooks={"request": [record]})
    monkeypatch.setattr(call_status, "_client", lambda: client)
    try:
        async with http.get(host.url_for("api/calls"), headers=FKEY) as r:
            body = await r.json()
    finally:
        await client.aclose()
    assert sorted(c["call_id"] for c in body["calls"]) == ids[4:]
    assert len(requests) == 5 and all(q["showInput"] == "false" and q["top"] == "7" for q in requests)


async def test_transfer_to_an_allowed_target_raises_the_transfer_event(host, http):
    await start_call(host, "rtc_t")
    async with http.post(host.url_for("api/calls/rtc_t/transfer"), json={"target": "sales"}, headers=FKEY) as r:
        assert r.status == 202
        assert (await r.json())["target"] == "sales"
    status = await host.engine.wait_for_completion("rtc_t", 5)
    assert status["output"] == {"event": "transfer", "data": {"target": "sales"}}


@pytest.mark.parametrize("body, reason", [
    (b"not json", "must be JSON"),
    (b"[1, 2]", "JSON object"),
    (b"{}", "'target'"),
    (b'{"target": 5}', "'target'"),
    (b'{"target": "tel:+14155550123"}', "unknown transfer target"),
    (b'{"target": "legal"}', "allowed: sales, support"),
])
async def test_transfer_with_a_bad_body_or_unknown_target_is_400_with_a_reason(host, http, body, reason):
    await start_call(host, "rtc_bad")
    async with http.post(host.url_for("api/calls/rtc_bad/transfer"), data=body, headers=FKEY) as r:
        assert r.status == 400
        assert reason in (await r.json())["error"]
    assert host.engine.get_status("rtc_bad")["runtimeStatus"] == "Running"  # nothing was raised


def test_parse_transfer_target_without_a_profile_allows_nothing():
    with pytest.raises(OperatorError) as e:
        parse_transfer_target(b'{"target": "sales"}', None)
    assert e.value.status == 400 and "allowed: none" in e.value.reason
