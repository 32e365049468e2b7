"""Intake against a stand-in call-control server: every rejection path has no side effects, dedupe under
concurrency, platform failures, start failures, refer fallback, and logs without numbers or secrets."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from datetime import UTC, datetime

import pytest
from openai.types.realtime import RealtimeSessionCreateRequest

from shared.intake import MAX_BODY_BYTES
from shared.routing import AgentProfile

from .conftest import incoming_body, new_secret, signed_headers
from .harness import API_KEY, DEPLOYMENT, Workflow, default_rules, fixed_clock, make_intake
from .standin import NOT_FOUND, SERVER_ERROR, Step

CALL = "rtc_u1_9c6574da8b8a41a18da9308f4ad974ce"


@pytest.fixture
async def intake(standin, secret):
    it = make_intake(standin.url, (secret,))
    yield it
    await it._cc.aclose()


async def deliver(intake, secret, body=None, *, msg_id="wh_1", workflow=None, headers=None):
    body = incoming_body() if body is None else body
    headers = signed_headers(secret, body, msg_id=msg_id) if headers is None else headers
    wf = workflow or Workflow()
    return await intake.handle(body, headers, **wf.kwargs()), wf


# ---------------------------------------------------------------------------------- happy path and input


async def test_accepts_and_starts_the_workflow_with_masked_input(standin, secret):
    when = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)
    intake = make_intake(standin.url, (secret,), clock=fixed_clock(when))
    body = incoming_body()
    headers = signed_headers(secret, body, msg_id="wh_abc", ts=int(when.timestamp()))
    wf = Workflow()
    try:
        result = await intake.handle(body, headers, **wf.kwargs())
    finally:
        await intake._cc.aclose()
    assert (result.status, result.body, result.call_id, result.action, result.webhook_id) == (
        200, {"status": "accepted", "profile": "reception"}, CALL, "accept", "wh_abc")

    [accept] = standin.actions("accept")
    assert accept.call_id == CALL and accept.headers["api-key"] == API_KEY
    sent = accept.json()
    RealtimeSessionCreateRequest.model_validate(sent)
    assert sent["model"] == DEPLOYMENT and sent["audio"]["output"]["voice"] == "marin"
    assert [t["name"] for t in sent["tools"]] == ["lookup_order", "end_call", "transfer_call"]

    [(call_id, call_input)] = wf.started
    assert call_id == CALL
    assert call_input == {
        "call_id": CALL, "webhook_id": "wh_abc", "accepted_at": "2026-11-25T12:00:00.123456Z",
        "caller": "+1425***1212", "dialed": "+1800***1212", "profile_name": "reception",
        "profile": default_rules().profiles["reception"].to_json(), "max_duration_seconds": 600,
    }
    assert (
        AgentProfile.from_json(json.loads(json.dumps(call_input["profile"]))) == default_rules().profiles["reception"]
    )
    assert wf.live_queries == 0  # the default rules set no capacity: no Durable query on the ring path


async def test_max_duration_is_capped_by_settings(standin, secret):
    # A profile without its own limit gets the settings value (profiles above it fail at load).
    rules = {"numbers": {"*": "p"}, "profiles": {"p": {"instructions": "x", "greeting": "y"}}}
    intake = make_intake(standin.url, (secret,), rules=rules, max_call_duration_seconds=120)
    try:
        result, wf = await deliver(intake, secret)
    finally:
        await intake._cc.aclose()
    assert result.status == 200
    assert wf.started[0][1]["max_duration_seconds"] == 120


# -------------------------------------------------------------------------- rejections without side effects


def _no_side_effects(standin, wf):
    assert standin.requests == [], "call-control server must receive nothing"
    assert wf.started == [] and wf.live_queries == 0


@pytest.mark.parametrize(
    "tamper, status",
    [
        (lambda b, h, s: (b, {k: v for k, v in h.items() if k != "webhook-signature"}), 401),
        (lambda b, h, s: (b, {k: v for k, v in h.items() if k != "webhook-id"}), 401),
        (lambda b, h, s: (b, {**h, "webhook-timestamp": "yesterday"}), 401),
        (lambda b, h, s: (b, signed_headers(s, b, ts=int(h["webhook-timestamp"]) - 301)), 401),
        (lambda b, h, s: (b, signed_headers(s, b, ts=int(h["webhook-timestamp"]) + 301)), 401),
        (lambda b, h, s: (b, signed_headers(new_secret(), b)), 401),
        (lambda b, h, s: (b.replace(b"+1425", b"+1426"), h), 401),
        (lambda b, h, s: (b"{not json", signed_headers(s, b"{not json")), 400),
        (lambda b, h, s: (b'{"id": 1}', signed_headers(s, b'{"id": 1}')), 400),
        (
            lambda b, h, s: (
                b.replace(b'"rtc_u1_', b'"rtc/../'),
                signed_headers(s, b.replace(b'"rtc_u1_', b'"rtc/../')),
            ),
            400,
        ),
        (lambda b, h, s: (b"x" * (MAX_BODY_BYTES + 1), signed_headers(s, b"x" * (MAX_BODY_BYTES + 1))), 413),
    ],
    ids=[
        "no-signature",
        "no-id",
        "bad-timestamp",
        "stale",
        "future",
        "wrong-secret",
        "tampered",
        "not-json",
        "wrong-shape",
        "bad-call-id",
        "oversized",
    ],
)
async def test_rejections_have_no_side_effects(intake, standin, secret, tamper, status):
    body = incoming_body()
    body, headers = tamper(body, signed_headers(secret, body), secret)
    result, wf = await deliver(intake, secret, body, headers=headers)
    assert result.status == status
    _no_side_effects(standin, wf)
    # A later genuine delivery of the same call still works: nothing was remembered.
    good = incoming_body()
    ok, wf2 = await deliver(intake, secret, good, msg_id="wh_good")
    assert ok.status == 200 and ok.body["status"] == "accepted" and len(wf2.started) == 1


async def test_other_event_types_are_ignored(intake, standin, secret):
    body = incoming_body(event_type="response.completed")
    result, wf = await deliver(intake, secret, body)
    assert (result.status, result.body) == (200, {"status": "ignored"})
    _no_side_effects(standin, wf)


async def test_previous_secret_is_accepted_during_rotation(standin, secret):
    previous = new_secret()
    intake = make_intake(standin.url, (secret, previous))
    try:
        result, _ = await deliver(intake, previous)
    finally:
        await intake._cc.aclose()
    assert result.status == 200 and result.body["status"] == "accepted"


# ------------------------------------------------------------------------------------------------ dedupe


async def test_concurrent_duplicates_accept_once(intake, standin, secret):
    standin.script = {"accept": [Step(delay=0.2)]}  # slow accept: all five deliveries overlap it
    body = incoming_body()
    wf = Workflow(start_delay=0.05)
    # Same event redelivered: same webhook-id, different timestamp per attempt.
    results = await asyncio.gather(*(
        intake.handle(body, signed_headers(secret, body, msg_id="wh_same"), **wf.kwargs()) for _ in range(5)))
    assert len(standin.actions("accept")) == 1
    assert len(wf.started) == 1
    assert sorted(r.body["status"] for r in results) == ["accepted"] + ["duplicate"] * 4
    assert all(r.status == 200 for r in results)
    assert intake._locks == {}  # per-call locks are released


async def test_duplicate_with_new_webhook_id_same_call_is_caught(intake, standin, secret):
    body = incoming_body()
    first, wf = await deliver(intake, secret, body, msg_id="wh_1")
    second, _ = await deliver(intake, secret, body, msg_id="wh_2", workflow=wf)
    assert (first.body["status"], second.body) == ("accepted", {"status": "duplicate", "outcome": "accepted"})
    assert len(standin.actions("accept")) == 1 and len(wf.started) == 1


async def test_existing_workflow_is_a_duplicate_across_restarts(intake, standin, secret):
    wf = Workflow(existing={CALL})  # another process (or a previous life of this one) took the call
    result, _ = await deliver(intake, secret, workflow=wf)
    assert (result.status, result.body["status"]) == (200, "duplicate")
    assert standin.requests == [] and wf.started == []


async def test_call_exists_failure_does_not_drop_the_call(intake, standin, secret):
    wf = Workflow()

    async def broken(call_id: str) -> bool:
        raise OSError("storage down")

    result = await intake.handle(incoming_body(), signed_headers(secret, incoming_body()),
                                 start_call=wf.start_call, call_exists=broken, live_calls=None)
    assert result.body["status"] == "accepted" and len(wf.started) == 1


# ------------------------------------------------------------------------------------- platform outcomes


async def test_accept_404_is_caller_gone_without_workflow(intake, standin, secret):
    standin.script = {"accept": [NOT_FOUND]}
    result, wf = await deliver(intake, secret)
    assert (result.status, result.body) == (200, {"status": "caller_gone"})
    assert wf.started == []
    again, _ = await deliver(intake, secret, msg_id="wh_late", workflow=wf)
    assert again.body == {"status": "duplicate", "outcome": "caller_gone"}
    assert len(standin.actions("accept")) == 1


async def test_accept_failure_is_502_and_not_remembered(standin, secret):
    standin.script = {"accept": [SERVER_ERROR, Step()]}
    intake = make_intake(standin.url, (secret,), read_timeout=0.3)
    try:
        first, wf = await deliver(intake, secret)
        assert (first.status, first.body["error"]) == (502, "accept_failed")
        assert wf.started == [] and len(standin.actions("accept")) == 1  # no blind second accept
        retry, _ = await deliver(intake, secret, workflow=wf)  # the platform's redelivery
    finally:
        await intake._cc.aclose()
    assert (retry.status, retry.body["status"]) == (200, "accepted")
    assert len(standin.actions("accept")) == 2 and len(wf.started) == 1


async def test_an_accept_without_an_answer_may_have_landed_so_the_call_is_run_and_never_accepted_again(
        standin, secret, caplog):
    # The accept was sent and timed out: a caller may be on the line. The workflow runs (bounded by the maximum
    # duration, recorded; if the accept never landed, its sideband answers 404 and it ends at once), and the
    # platform's redelivery does not accept a second time.
    caplog.set_level(logging.INFO, logger="switchboard")
    standin.script = {"accept": [Step(delay=1.0), Step()]}
    intake = make_intake(standin.url, (secret,), read_timeout=0.3)
    try:
        first, wf = await deliver(intake, secret)
        retry, _ = await deliver(intake, secret, msg_id="wh_redelivered", workflow=wf)
    finally:
        await intake._cc.aclose()
    assert (first.status, first.body["status"]) == (200, "accepted")
    assert len(wf.started) == 1 and len(standin.actions("accept")) == 1
    assert retry.status == 200 and retry.body["status"] == "duplicate"
    assert "accept got no answer" in caplog.text


async def test_start_failure_hangs_up_and_answers_500(intake, standin, secret, caplog):
    caplog.set_level(logging.INFO, logger="switchboard")
    wf = Workflow(fail_start=True)
    result, _ = await deliver(intake, secret, workflow=wf)
    assert (result.status, result.body) == (500, {"error": "start_failed"})
    assert [r.action for r in standin.requests] == ["accept", "hangup"]
    assert standin.requests[1].call_id == CALL
    assert "did not start" in caplog.text
    # The caller heard the call connect: it gets its record, the only one, since no workflow will publish it.
    [(call_input, reason)] = wf.unstarted
    assert call_input["call_id"] == CALL and call_input["caller"] == "+1425***1212"
    assert "could not be started" in reason
    # The redelivery after our 500 must not accept the call we just hung up.
    wf.fail_start = False
    again, _ = await deliver(intake, secret, workflow=wf)
    assert again.body == {"status": "duplicate", "outcome": "failed"}
    assert [r.action for r in standin.requests] == ["accept", "hangup"] and wf.started == []


async def test_start_failure_with_failing_hangup_still_answers_500(intake, standin, secret):
    standin.script = {"hangup": [SERVER_ERROR]}
    result, _ = await deliver(intake, secret, workflow=Workflow(fail_start=True))
    assert result.status == 500
    assert len(standin.actions("hangup")) == 3  # hangup is idempotent: bounded retries


async def test_start_failure_with_an_unpublishable_record_still_answers_500(intake, standin, secret, caplog):
    wf = Workflow(fail_start=True, fail_record=True)
    result, _ = await deliver(intake, secret, workflow=wf)
    assert (result.status, result.body) == (500, {"error": "start_failed"})
    assert [r.action for r in standin.requests] == ["accept", "hangup"]
    assert "record of the unstarted call was not published either (ConnectionError)" in caplog.text


# ----------------------------------------------------------------------------------- reject and refer


RULES = {
    "callers": {"deny": ["+1900"]},
    "capacity": {"max_concurrent_calls": 2},
    "numbers": {"+18005551212": "main", "+18005550100": "night"},
    "profiles": {
        "main": {"instructions": "Main.", "greeting": "Hi."},
        "night": {"instructions": "Night.", "greeting": "Hi.",
                  "hours": {"timezone": "UTC", "weekly": {"sun": ["00:00-00:01"]},
                            "after_hours": {"action": "refer", "target_uri": "sip:voicemail@example.com"}}},
    },
}
WEDNESDAY = datetime(2026, 11, 25, 12, tzinfo=UTC)


@pytest.fixture
async def rules_intake(standin, secret):
    it = make_intake(standin.url, (secret,), rules=RULES, clock=fixed_clock(WEDNESDAY))
    yield it
    await it._cc.aclose()


def at_wednesday(secret, body, msg_id="wh_1"):
    return signed_headers(secret, body, msg_id=msg_id, ts=int(WEDNESDAY.timestamp()))


async def test_denied_caller_is_rejected_403(rules_intake, standin, secret):
    body = incoming_body(caller="<sip:+19005551212@h>")
    result, wf = await deliver(rules_intake, secret, body, headers=at_wednesday(secret, body))
    assert (result.status, result.body["status"], result.body["sip_status"]) == (200, "rejected", 403)
    assert [(r.action, r.json()) for r in standin.requests] == [("reject", {"status_code": 403})]
    assert wf.started == []


async def test_capacity_queries_live_calls_and_rejects_486(rules_intake, standin, secret):
    body = incoming_body()
    wf = Workflow(live=2)
    result, _ = await deliver(rules_intake, secret, body, headers=at_wednesday(secret, body), workflow=wf)
    assert result.body == {"status": "rejected", "reason": "at_capacity", "sip_status": 486}
    assert wf.live_queries == 1 and standin.requests[0].json() == {"status_code": 486}


async def test_a_slow_capacity_count_is_cut_off_and_the_call_is_answered(rules_intake, standin, secret, caplog,
                                                                          monkeypatch):
    import shared.intake

    monkeypatch.setattr(shared.intake, "LIVE_COUNT_TIMEOUT_SECONDS", 0.2)
    wf = Workflow(live=2)  # would be at capacity, if the count ever answered

    async def hanging_count() -> int:
        await asyncio.sleep(30)
        return 2

    wf.live_calls = hanging_count  # type: ignore[method-assign]
    body = incoming_body()
    started = asyncio.get_running_loop().time()
    result, _ = await deliver(rules_intake, secret, body, headers=at_wednesday(secret, body), workflow=wf)
    assert asyncio.get_running_loop().time() - started < 5
    assert result.body["status"] == "accepted" and [r.action for r in standin.requests] == ["accept"]
    assert f"call {CALL}: live call count took over 0.2 s; capacity not checked" in caplog.messages


async def test_reject_failure_is_502(rules_intake, standin, secret):
    standin.script = {"reject": [SERVER_ERROR]}
    body = incoming_body(caller="<sip:+19005551212@h>")
    result, _ = await deliver(rules_intake, secret, body, headers=at_wednesday(secret, body))
    assert (result.status, result.body["error"]) == (502, "reject_failed")


async def test_after_hours_refer_on_ringing_call(rules_intake, standin, secret):
    body = incoming_body(dialed="<sip:+18005550100@h>")
    result, wf = await deliver(rules_intake, secret, body, headers=at_wednesday(secret, body))
    assert (result.status, result.body) == (200, {"status": "referred", "reason": "after_hours"})
    assert [(r.action, r.json()) for r in standin.requests] == [("refer", {"target_uri": "sip:voicemail@example.com"})]
    assert wf.started == []


async def test_refused_refer_falls_back_to_after_hours_reject(rules_intake, standin, secret):
    standin.script = {"refer": [NOT_FOUND]}  # what the emulator answers for refer on a ringing call
    body = incoming_body(dialed="<sip:+18005550100@h>")
    result, _ = await deliver(rules_intake, secret, body, headers=at_wednesday(secret, body))
    assert result.body == {"status": "rejected", "reason": "after_hours", "sip_status": 480, "refer_failed": True}
    assert [r.action for r in standin.requests] == ["refer", "reject"]



async def test_refer_refused_with_4xx_falls_back_to_reject_and_5xx_is_502(rules_intake, standin, secret):
    standin.script = {"refer": [Step(409, {"error": {"message": "Call not answered", "code": "conflict"}})]}
    body = incoming_body(dialed="<sip:+18005550100@h>")
    result, _ = await deliver(rules_intake, secret, body, headers=at_wednesday(secret, body))
    assert result.body == {"status": "rejected", "reason": "after_hours", "sip_status": 480, "refer_failed": True}
    assert [r.action for r in standin.requests] == ["refer", "reject"]

    standin.script = {"refer": [SERVER_ERROR]}
    body = incoming_body(call_id="rtc_2", dialed="<sip:+18005550100@h>")
    result, _ = await deliver(rules_intake, secret, body, msg_id="wh_2", headers=at_wednesday(secret, body, "wh_2"))
    assert (result.status, result.body["error"]) == (502, "refer_failed")
    assert [r.action for r in standin.requests] == ["refer", "reject", "refer"]  # no reject after a 5xx

# --------------------------------------------------------------------------------------------- logging


async def test_logs_never_contain_numbers_secrets_or_keys(standin, secret, caplog):
    caplog.set_level(logging.DEBUG)
    intake = make_intake(standin.url, (secret,))
    body = incoming_body()
    try:
        await deliver(intake, secret, body)  # accepted
        standin.script = {"accept": [SERVER_ERROR]}
        await deliver(intake, secret, incoming_body("rtc_u1_second"), msg_id="wh_2")  # 502
        await deliver(intake, secret, incoming_body("rtc_u1_third"), msg_id="wh_3", workflow=Workflow(fail_start=True))
        await deliver(intake, secret, body, headers=signed_headers(new_secret(), body))  # 401
    finally:
        await intake._cc.aclose()
    text = caplog.text
    assert CALL in text and "rtc_u1_second" in text  # call ids are there, so the lines are useful
    assert "+1425***1212" in text
    for forbidden in ("4255551212", "8005551212", secret, secret.removeprefix("whsec_"), API_KEY, "Alice"):
        assert forbidden not in text, forbidden
    # Any long digit run in our own lines would be a leaked number. (Third-party DEBUG lines carry object ids
    # and byte counts that can be 10 digits by chance; they are covered by the exact checks above.)
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("switchboard"))
    assert "rtc_u1_second" in ours
    assert not re.search(r"\+?\d{10,}", ours)
