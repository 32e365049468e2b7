"""Which intake outcomes carry a declined call for its record: a reject or refer that landed does, with masked
numbers, the routing reason and the SIP code; a failed platform request, a caller already gone or an accept do
not. Intake against the foundation's call-control stand-in (real HTTP)."""

from __future__ import annotations

from shared.records import build_record, decision_record
from tests.foundation.conftest import incoming_body, secret, signed_headers, standin  # noqa: F401  (fixtures)
from tests.foundation.harness import Workflow, fixed_clock, make_intake
from tests.foundation.standin import NOT_FOUND, SERVER_ERROR
from tests.foundation.test_intake import RULES, WEDNESDAY

CALL = "rtc_u1_9c6574da8b8a41a18da9308f4ad974ce"


async def _deliver(standin, secret, *, caller="<sip:+14255551212@h>", dialed="<sip:+18005551212@h>",  # noqa: F811
                   call_id=CALL, live=0):
    intake = make_intake(standin.url, (secret,), rules=RULES, clock=fixed_clock(WEDNESDAY))
    body = incoming_body(call_id=call_id, caller=caller, dialed=dialed)
    headers = signed_headers(secret, body, ts=int(WEDNESDAY.timestamp()))
    try:
        return await intake.handle(body, headers, **Workflow(live=live).kwargs())
    finally:
        await intake._cc.aclose()


async def test_a_landed_reject_or_refer_carries_its_declined_call(standin, secret):  # noqa: F811
    denied = await _deliver(standin, secret, caller="<sip:+19005551212@h>")
    assert denied.declined == {"call_id": CALL, "outcome": "rejected", "reason": "caller_denied", "sip_status": 403,
                               "caller": "+1900***1212", "dialed": "+1800***1212", "profile_name": None,
                               "decided_at": "2026-11-25T12:00:00.000000Z"}

    referred = await _deliver(standin, secret, dialed="<sip:+18005550100@h>", call_id="rtc_2")
    assert (referred.declined["outcome"], referred.declined["reason"], referred.declined["sip_status"]) == (
        "referred", "after_hours", None)

    full = await _deliver(standin, secret, call_id="rtc_3", live=2)
    assert (full.declined["outcome"], full.declined["reason"], full.declined["sip_status"]) == (
        "rejected", "at_capacity", 486)

    # A refused refer falls back to a reject: the record says what reached the caller.
    standin.script = {"refer": [NOT_FOUND]}
    fallback = await _deliver(standin, secret, dialed="<sip:+18005550100@h>", call_id="rtc_4")
    assert (fallback.declined["outcome"], fallback.declined["sip_status"]) == ("rejected", 480)


async def test_nothing_to_record_when_the_platform_failed_the_caller_left_or_the_call_was_accepted(
        standin, secret):  # noqa: F811
    standin.script = {"reject": [SERVER_ERROR]}
    failed = await _deliver(standin, secret, caller="<sip:+19005551212@h>")
    assert failed.status == 502 and failed.declined is None  # the redelivery decides, and records

    standin.script = {"reject": [NOT_FOUND]}
    gone = await _deliver(standin, secret, caller="<sip:+19005551212@h>", call_id="rtc_5")
    assert gone.body["status"] == "caller_gone" and gone.declined is None

    accepted = await _deliver(standin, secret, call_id="rtc_6")
    assert accepted.body["status"] == "accepted" and accepted.declined is None


def test_a_declined_record_has_the_schema_of_an_answered_one() -> None:
    declined = decision_record("rtc_1", "rejected", "after_hours", sip_status=480, caller="+14255551212",
                               dialed="+1800***1212", profile_name="reception", decided_at="2026-11-25T12:00:00Z")
    answered = build_record({"call_id": "rtc_1", "accepted_at": "2026-11-25T12:00:00Z"}, {"outcome": "completed"},
                            "call_ended", [])
    assert set(declined) == set(answered)
    assert declined["caller"] == "+1425***1212"  # a full number is masked again on the way out
    assert (declined["outcome"], declined["ended_by"], declined["sip_status"], declined["transcript"]) == (
        "rejected", "routing", 480, [])


async def test_a_declined_record_that_cannot_be_published_is_logged_never_raised(monkeypatch, caplog):
    from call_workflow import runtime

    async def broken() -> None:
        raise ConnectionError("storage down: AccountKey=c2VjcmV0")

    monkeypatch.setattr(runtime, "get", broken)
    declined = {"call_id": "rtc_9", "outcome": "rejected", "reason": "after_hours", "sip_status": 480,
                "caller": "+1425***1212", "dialed": "+1800***1212", "profile_name": None,
                "decided_at": "2026-11-25T12:00:00.000000Z"}
    with caplog.at_level("ERROR", logger="switchboard.runtime"):
        task = runtime.publish_declined(declined)
        await runtime.drain_declined(timeout=5)
    assert task.done() and task.exception() is None
    assert "call rtc_9: the record of the rejected call was not published (ConnectionError)" in caplog.text
    assert "AccountKey" not in caplog.text
