"""Call-control REST: auth, validation, state machine, 404 call_id_not_found, empty 200 bodies."""

from __future__ import annotations

import json

import pytest

from .helpers import ACCEPT_BODY, AUTH, accept, post

P = "/openai/v1/realtime/calls"


async def test_accept_returns_empty_200_and_changes_state(emulator):
    call_id = await emulator.place_call()
    assert call_id.startswith("rtc_u1_") and len(call_id) == len("rtc_u1_") + 32
    assert emulator.calls[call_id].state == "ringing"
    await accept(emulator, call_id)
    call = emulator.calls[call_id]
    assert call.state == "accepted"
    assert call.accept_body == ACCEPT_BODY
    assert "accept_received" in call.timestamps


@pytest.mark.parametrize("headers,code", [
    ({}, "missing_api_key"),
    ({"api-key": "wrong"}, "invalid_api_key"),
    ({"Authorization": "Bearer wrong"}, "invalid_api_key"),
    ({"Authorization": "Basic dGVzdC1rZXk="}, "missing_api_key"),
])
async def test_auth_failures_get_401_envelope(emulator, headers, code):
    call_id = await emulator.place_call()
    status, raw = await post(emulator, f"{P}/{call_id}/accept", ACCEPT_BODY, headers=headers)
    assert status == 401
    err = json.loads(raw)["error"]
    assert err["code"] == code and err["type"] == "invalid_request_error" and "param" in err
    assert emulator.calls[call_id].state == "ringing"


async def test_bearer_api_key_and_separate_token_are_accepted(emulator_factory):
    emu = await emulator_factory(bearer_token="entra-token")
    for headers in (
        {"Authorization": "Bearer test-key"},
        {"Authorization": "Bearer entra-token"},
        {"api-key": "entra-token"},
    ):
        call_id = await emu.place_call()
        status, _ = await post(emu, f"{P}/{call_id}/accept", ACCEPT_BODY, headers=headers)
        assert status == 200


async def test_openai_prefix_serves_the_same_routes(emulator):
    call_id = await emulator.place_call()
    status, raw = await post(emulator, f"/v1/realtime/calls/{call_id}/reject", {"status_code": 486})
    assert (status, raw) == (200, b"")
    assert emulator.calls[call_id].state == "rejected" and emulator.calls[call_id].reject_status == 486


@pytest.mark.parametrize("body,param", [
    ({"model": "gpt-realtime"}, "type"),
    ({"type": "session", "model": "gpt-realtime"}, "type"),
    ({"type": "realtime"}, "model"),
])
async def test_accept_validation(emulator, body, param):
    call_id = await emulator.place_call()
    status, raw = await post(emulator, f"{P}/{call_id}/accept", body)
    assert status == 400 and json.loads(raw)["error"]["param"] == param
    assert emulator.calls[call_id].state == "ringing"


@pytest.mark.parametrize("code", [299, 700, "486", True])
async def test_reject_status_must_be_300_to_699(emulator, code):
    call_id = await emulator.place_call()
    status, raw = await post(emulator, f"{P}/{call_id}/reject", {"status_code": code})
    assert status == 400 and json.loads(raw)["error"]["param"] == "status_code"


async def test_reject_default_603(emulator):
    call_id = await emulator.place_call()
    assert await post(emulator, f"{P}/{call_id}/reject", {}) == (200, b"")
    assert emulator.calls[call_id].reject_status == 603


async def test_unknown_and_finished_calls_are_404(emulator):
    status, raw = await post(emulator, f"{P}/rtc_u1_{'0' * 32}/accept", ACCEPT_BODY)
    assert status == 404
    assert json.loads(raw) == {"error": {"message": "No session found for the provided call_id",
                                         "type": "invalid_request_error", "param": None, "code": "call_id_not_found"}}
    call_id = await emulator.place_call()
    await post(emulator, f"{P}/{call_id}/reject", {})
    for action, body in (
        ("accept", ACCEPT_BODY),
        ("reject", {}),
        ("refer", {"target_uri": "tel:+1"}),
        ("hangup", None),
    ):
        status, raw = await post(emulator, f"{P}/{call_id}/{action}", body)
        assert status == 404 and json.loads(raw)["error"]["code"] == "call_id_not_found", action


async def test_refer_and_hangup_need_an_accepted_call(emulator):
    call_id = await emulator.place_call()
    assert (await post(emulator, f"{P}/{call_id}/hangup"))[0] == 404
    assert (await post(emulator, f"{P}/{call_id}/refer", {"target_uri": "tel:+14155550123"}))[0] == 404
    await accept(emulator, call_id)
    assert await post(emulator, f"{P}/{call_id}/hangup") == (200, b"")
    assert emulator.calls[call_id].state == "ended" and emulator.calls[call_id].ended_reason == "hangup"
    assert (await post(emulator, f"{P}/{call_id}/hangup"))[0] == 404


@pytest.mark.parametrize("target,ok", [("tel:+14155550123", True), ("sip:agent@example.com", True),
                                       ("https://x", False), ("+14155550123", False), (None, False)])
async def test_refer_validation(emulator, target, ok):
    call_id = await emulator.place_call()
    await accept(emulator, call_id)
    status, _ = await post(emulator, f"{P}/{call_id}/refer", {} if target is None else {"target_uri": target})
    assert status == (200 if ok else 400)
    if ok:
        assert emulator.calls[call_id].refer_target == target
        await emulator.wait_for_state(call_id, "ended", timeout=2)
        assert emulator.calls[call_id].ended_reason == "referred"


async def test_ring_timeout_expires_the_call(emulator_factory):
    emu = await emulator_factory(ring_timeout_s=0.2)
    call_id = await emu.place_call()
    assert await emu.wait_for_state(call_id, "expired", timeout=2) == "expired"
    assert emu.calls[call_id].ended_reason == "ring_timeout"
    assert (await post(emu, f"{P}/{call_id}/accept", ACCEPT_BODY))[0] == 404


async def test_caller_gives_up_while_ringing(emulator):
    call_id = await emulator.place_call()
    await emulator.caller_hangup(call_id)
    assert emulator.calls[call_id].state == "expired"
    assert (await post(emulator, f"{P}/{call_id}/accept", ACCEPT_BODY))[0] == 404


async def test_accept_faults_status_then_success(emulator):
    call_id = await emulator.place_call({"faults": {"accept": {"status": 503, "times": 2}}})
    assert (await post(emulator, f"{P}/{call_id}/accept", ACCEPT_BODY))[0] == 503
    assert (await post(emulator, f"{P}/{call_id}/accept", ACCEPT_BODY))[0] == 503
    assert (await post(emulator, f"{P}/{call_id}/accept", ACCEPT_BODY))[0] == 200


async def test_accept_fault_delay(emulator):
    import time

    call_id = await emulator.place_call({"faults": {"accept": {"delay_s": 0.3}}})
    t = time.monotonic()
    assert (await post(emulator, f"{P}/{call_id}/accept", ACCEPT_BODY))[0] == 200
    assert time.monotonic() - t >= 0.3


async def test_slow_accept_loses_to_caller_hangup(emulator):
    """Accept that arrives (slowly) after the caller gave up answers 404, like production."""
    import asyncio

    call_id = await emulator.place_call({"faults": {"accept": {"delay_s": 0.3}}})
    task = asyncio.create_task(post(emulator, f"{P}/{call_id}/accept", ACCEPT_BODY))
    await asyncio.sleep(0.1)
    await emulator.caller_hangup(call_id)
    status, raw = await task
    assert status == 404 and json.loads(raw)["error"]["code"] == "call_id_not_found"


async def test_hangup_fault_fails_the_first_requests_and_the_call_stays_up(emulator):
    call_id = await emulator.place_call({"faults": {"hangup": {"status": 500, "times": 3}}})
    await accept(emulator, call_id)
    for _ in range(3):
        status, raw = await post(emulator, f"{P}/{call_id}/hangup")
        assert status == 500 and json.loads(raw)["error"]["type"] == "server_error"
        assert emulator.calls[call_id].state == "accepted"  # a failed hangup hangs nothing up
    assert await post(emulator, f"{P}/{call_id}/hangup") == (200, b"")
    call = emulator.calls[call_id]
    assert call.state == "ended" and call.ended_reason == "hangup"
    assert (await post(emulator, f"{P}/{call_id}/hangup"))[0] == 404  # gone: 404, as in production
    assert [s for _, s in call.hangup_requests] == [500, 500, 500, 200, 404]
    assert call.to_json()["hangup_requests"][0]["status"] == 500


async def test_hangup_fault_is_validated():
    from emulator.scenario import ScenarioError, parse_scenario

    assert parse_scenario({"faults": {"hangup": {}}}).faults.hangup.status == 500
    with pytest.raises(ScenarioError, match=r"faults.hangup.status"):
        parse_scenario({"faults": {"hangup": {"status": 200}}})
    with pytest.raises(ScenarioError, match=r"faults.hangup.times"):
        parse_scenario({"faults": {"hangup": {"times": -1}}})


async def test_api_version_query_is_tolerated(emulator):
    call_id = await emulator.place_call()
    status, _ = await post(emulator, f"{P}/{call_id}/accept?api-version=2025-08-28", ACCEPT_BODY, headers=AUTH)
    assert status == 200
