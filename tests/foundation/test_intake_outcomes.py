"""What each intake outcome shows, against the call-control stand-in: the answer the platform gets (status, body,
ids), the record of a declined call, what is remembered for redeliveries, the step timings (Server-Timing), the
trace, and the log lines an operator reads (numbers masked, the call id on every line)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

import shared.intake
from localrun.telemetry import memory
from shared import telemetry
from shared.admission import Admission
from shared.drain import DrainState, DrainSwitch
from shared.intake import Intake, IntakeResult
from shared.routing import parse_rules
from shared.rules_store import RulesHolder

from .conftest import incoming_body, new_secret, signed_headers
from .harness import Workflow, fixed_clock, make_intake
from .standin import NOT_FOUND, SERVER_ERROR, Step
from .test_drain import CountingStore, drain_settings
from .test_intake import CALL, RULES, WEDNESDAY

LOGGER = "switchboard.intake"
DECIDED_AT = "2026-11-25T12:00:00.000000Z"
BODY_LIMIT = 262_144  # 256 KiB, the host's FUNCTIONS_REQUEST_BODY_SIZE_LIMIT as deployed (docs/deploy.md)


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture):
    """The intake's own log lines, (level, message), at every level."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    return lambda: [(r.levelname, r.getMessage()) for r in caplog.records if r.name == LOGGER]


@dataclass
class Desk:
    """An intake with test_intake's RULES (deny +1900, capacity 2, a night line that refers) at a fixed Wednesday
    noon, and the Durable side it talks to."""

    intake: Intake
    secret: str
    workflow: Workflow = field(default_factory=Workflow)

    async def deliver(self, body: bytes | None = None, *, msg_id: str = "wh_1",
                      headers: dict[str, str] | None = None) -> IntakeResult:
        body = incoming_body() if body is None else body
        if headers is None:
            headers = signed_headers(self.secret, body, msg_id=msg_id, ts=int(WEDNESDAY.timestamp()))
        return await self.intake.handle(body, headers, **self.workflow.kwargs())


@pytest.fixture
async def make_desk(standin, secret):
    """Desks with more options (admission, drain); all closed at the end."""
    made: list[Desk] = []

    def make(**options: Any) -> Desk:
        intake = make_intake(standin.url, (secret,), rules=RULES, clock=fixed_clock(WEDNESDAY), read_timeout=0.3,
                             **options)
        made.append(Desk(intake, secret))
        return made[-1]

    yield make
    for d in made:
        await d.intake._cc.aclose()


@pytest.fixture
def desk(make_desk) -> Desk:
    return make_desk()


def sip_body(*headers: tuple[str, str], call_id: str = CALL) -> bytes:
    payload = {"id": "evt_1", "type": "realtime.call.incoming", "created_at": int(WEDNESDAY.timestamp()),
               "data": {"call_id": call_id, "sip_headers": [{"name": n, "value": v} for n, v in headers]}}
    return json.dumps(payload).encode()


def declined(outcome: str, reason: str, sip_status: int | None, *, caller: str | None = "+1425***1212",
             dialed: str | None = "+1800***1212", profile: str | None = None) -> dict[str, Any]:
    return {"call_id": CALL, "outcome": outcome, "reason": reason, "sip_status": sip_status, "caller": caller,
            "dialed": dialed, "profile_name": profile, "decided_at": DECIDED_AT}


def answer(result: IntakeResult) -> tuple[Any, ...]:
    """Everything a delivery answers, but the timings."""
    return (result.status, result.body, result.call_id, result.action, result.webhook_id, result.declined)


# ------------------------------------------------------------------------------------- accepted calls


async def test_an_accepted_call_is_logged_once_with_masked_numbers_and_the_profile(desk, standin, lines):
    result = await desk.deliver()
    assert answer(result) == (200, {"status": "accepted", "profile": "main"}, CALL, "accept", "wh_1", None)
    assert lines() == [
        ("DEBUG", f"call {CALL} from +1425***1212 to +1800***1212: accept (accepted) profile=main"),
        ("INFO", f"call {CALL} from +1425***1212 to +1800***1212 accepted, workflow started (profile=main)"),
    ]
    again = await desk.deliver(msg_id="wh_2")
    assert answer(again) == (200, {"status": "duplicate", "outcome": "accepted"}, CALL, None, "wh_2", None)
    assert lines()[-1] == ("INFO", f"call {CALL} webhook wh_2 duplicate (was accepted)")
    assert len(standin.actions("accept")) == 1


async def test_an_event_padded_to_exactly_the_size_limit_is_still_answered(desk):
    body = incoming_body()
    padded = body + b" " * (BODY_LIMIT - len(body))  # JSON allows trailing white space
    result = await desk.deliver(padded)
    assert result.body == {"status": "accepted", "profile": "main"}


async def test_an_invite_without_a_to_header_routes_to_the_default_profile(standin, secret, lines):
    rules = {"numbers": {"+18005551212": "main", "*": "fallback"},
             "profiles": {"main": {"instructions": "Main.", "greeting": "Hi."},
                          "fallback": {"instructions": "Fallback.", "greeting": "Hello."}}}
    intake = make_intake(standin.url, (secret,), rules=rules)
    body = sip_body(("From", "<sip:+14255551212@h>"), ("Call-ID", "abc"))
    wf = Workflow()
    try:
        result = await intake.handle(body, signed_headers(secret, body), **wf.kwargs())
    finally:
        await intake._cc.aclose()
    assert answer(result) == (200, {"status": "accepted", "profile": "fallback"}, CALL, "accept", "wh_1", None)
    [(_, call_input)] = wf.started
    assert (call_input["caller"], call_input["dialed"], call_input["profile_name"]) == ("+1425***1212", None,
                                                                                         "fallback")
    assert standin.actions("accept")[0].json()["instructions"] == "Fallback."
    assert lines()[-1] == ("INFO", f"call {CALL} from +1425***1212 to None accepted, workflow started "
                                   "(profile=fallback)")


async def test_an_accept_that_may_have_landed_is_logged_with_why(desk, standin, lines):
    standin.script = {"accept": [Step(delay=1.0)]}
    result = await desk.deliver()
    assert result.body == {"status": "accepted", "profile": "main"}
    assert ("WARNING", f"call {CALL}: accept got no answer (timeout); starting the workflow in case it landed") \
        in lines()


# ------------------------------------------------------------------------------------- declined calls


async def test_a_denied_caller_is_refused_recorded_and_remembered(desk, standin, lines):
    result = await desk.deliver(incoming_body(caller="<sip:+19005551212@h>"))
    assert answer(result) == (200, {"status": "rejected", "reason": "caller_denied", "sip_status": 403}, CALL,
                              "reject", "wh_1", declined("rejected", "caller_denied", 403, caller="+1900***1212"))
    assert lines() == [("INFO", f"call {CALL} from +1900***1212 to +1800***1212: reject (caller_denied) "
                                "profile=None")]
    again = await desk.deliver(incoming_body(caller="<sip:+19005551212@h>"), msg_id="wh_2")
    assert answer(again) == (200, {"status": "duplicate", "outcome": "rejected"}, CALL, None, "wh_2", None)
    assert len(standin.actions("reject")) == 1


@pytest.mark.parametrize("name", ["f", "F"])
async def test_a_denied_caller_in_a_compact_from_header_is_refused(desk, standin, name):
    result = await desk.deliver(sip_body((name, "<sip:+19005551212@h>;tag=1"), ("t", "<sip:+18005551212@h>")))
    assert result.body == {"status": "rejected", "reason": "caller_denied", "sip_status": 403}
    assert [(r.action, r.json()) for r in standin.requests] == [("reject", {"status_code": 403})]
    assert desk.workflow.started == []


async def test_a_refer_is_answered_recorded_and_remembered(desk, standin):
    body = incoming_body(dialed="<sip:+18005550100@h>")
    result = await desk.deliver(body)
    assert answer(result) == (200, {"status": "referred", "reason": "after_hours"}, CALL, "refer", "wh_1",
                              declined("referred", "after_hours", None, dialed="+1800***0100", profile="night"))
    again = await desk.deliver(body, msg_id="wh_2")
    assert again.body == {"status": "duplicate", "outcome": "referred"}
    assert [r.action for r in standin.requests] == ["refer"]


@pytest.mark.parametrize(
    "refusal, line",
    [
        (NOT_FOUND, f"call {CALL}: refer answered 404 on the ringing call; rejecting instead"),
        (Step(409, {"error": {"message": "Call not answered", "code": "conflict"}}),
         f"call {CALL}: refer refused (409); rejecting instead"),
    ],
)
async def test_a_refused_refer_is_logged_and_the_reject_recorded(desk, standin, lines, refusal, line):
    standin.script = {"refer": [refusal]}
    result = await desk.deliver(incoming_body(dialed="<sip:+18005550100@h>"))
    assert answer(result) == (
        200, {"status": "rejected", "reason": "after_hours", "sip_status": 480, "refer_failed": True}, CALL,
        "reject", "wh_1", declined("rejected", "after_hours", 480, dialed="+1800***0100", profile="night"))
    assert ("WARNING", line) in lines()


@pytest.mark.parametrize("action", ["reject", "accept"])
async def test_a_caller_gone_before_the_answer_is_logged_and_remembered(desk, standin, lines, action):
    standin.script = {action: [NOT_FOUND]}
    caller = "<sip:+19005551212@h>" if action == "reject" else "<sip:+14255551212@h>"
    result = await desk.deliver(incoming_body(caller=caller))
    assert answer(result) == (200, {"status": "caller_gone"}, CALL, action, "wh_1", None)
    assert lines()[-1] == ("INFO", f"call {CALL}: caller gone before {action} (404 call_id_not_found)")
    again = await desk.deliver(incoming_body(caller=caller), msg_id="wh_2")
    assert again.body == {"status": "duplicate", "outcome": "caller_gone"}
    assert len(standin.actions(action)) == 1 and desk.workflow.started == []


OVERLOADED = Step(503, {"error": {"message": "Try again", "type": "server_error", "param": None, "code": "overloaded"}})


@pytest.mark.parametrize("action", ["reject", "refer", "accept"])
async def test_a_platform_failure_answers_502_is_logged_and_not_remembered(desk, standin, lines, action):
    standin.script = {action: [OVERLOADED, Step()]}
    body = incoming_body(caller="<sip:+19005551212@h>") if action == "reject" else \
        incoming_body(dialed="<sip:+18005550100@h>") if action == "refer" else incoming_body()
    result = await desk.deliver(body)
    assert answer(result) == (502, {"error": f"{action}_failed", "platform_status": 503}, CALL, action, "wh_1",
                              None)
    assert lines()[-1] == ("ERROR", f"call {CALL}: {action} failed: status=503 code=overloaded")
    retry = await desk.deliver(body, msg_id="wh_2")
    assert retry.status == 200 and retry.body["status"] != "duplicate"


@pytest.fixture
def host_clock_five_hours_behind_utc():
    # A host whose local time zone is not UTC (a POSIX TZ string: no time zone database needed).
    old = os.environ.get("TZ")
    os.environ["TZ"] = "XYZ+05"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


async def test_times_in_the_workflow_input_and_the_record_are_utc_whatever_the_host_zone(
        desk, host_clock_five_hours_behind_utc):
    await desk.deliver()
    [(_, call_input)] = desk.workflow.started
    assert call_input["accepted_at"] == "2026-11-25T12:00:00.000000Z"
    refused = await desk.deliver(incoming_body("rtc_2", caller="<sip:+19005551212@h>"))
    assert refused.declined is not None and refused.declined["decided_at"] == DECIDED_AT


# --------------------------------------------------------------------------------- failures on our side


async def test_a_workflow_that_does_not_start_is_hung_up_recorded_and_remembered(desk, standin, lines):
    desk.workflow = Workflow(fail_start=True)
    result = await desk.deliver()
    assert answer(result) == (500, {"error": "start_failed"}, CALL, "accept", "wh_1", None)
    [(call_input, reason)] = desk.workflow.unstarted
    assert reason == "the call workflow could not be started; the call was hung up"
    assert call_input["call_id"] == CALL
    assert ("ERROR", f"call {CALL}: accepted but the call workflow did not start; hanging up") in lines()
    desk.workflow.fail_start = False
    again = await desk.deliver(msg_id="wh_2")
    assert again.body == {"status": "duplicate", "outcome": "failed"}


async def test_a_failed_hangup_and_an_unpublishable_record_after_a_failed_start_are_logged(desk, standin, lines):
    standin.script = {"hangup": [SERVER_ERROR]}
    desk.workflow = Workflow(fail_start=True, fail_record=True)
    result = await desk.deliver()
    assert result.status == 500
    assert ("ERROR", f"call {CALL}: hangup after failed start also failed (CallControlError)") in lines()
    assert ("ERROR", f"call {CALL}: the record of the unstarted call was not published either "
                     "(ConnectionError)") in lines()


async def test_an_unexpected_error_answers_500_frees_the_place_and_is_not_remembered(make_desk, standin, lines,
                                                                                        caplog):
    admission = Admission(1)
    desk = make_desk(admission=admission)
    real_accept = desk.intake._cc.accept

    async def broken(call_id: str, body: dict[str, Any]) -> Any:
        raise RuntimeError("bug")

    desk.intake._cc.accept = broken  # type: ignore[method-assign]
    result = await desk.deliver()
    assert answer(result) == (500, {"error": "internal"}, CALL, None, "wh_1", None)
    assert lines()[-1] == ("ERROR", f"call {CALL}: unexpected error in intake")
    assert caplog.records[-1].exc_info is not None  # the traceback is in the log
    assert admission.live == 0
    desk.intake._cc.accept = real_accept  # type: ignore[method-assign]
    retry = await desk.deliver(msg_id="wh_2")
    assert retry.body == {"status": "accepted", "profile": "main"}


async def test_failing_durable_queries_are_logged_and_the_call_answered(desk, standin, lines):
    async def broken_exists(call_id: str) -> bool:
        raise OSError("storage down")

    async def broken_count() -> int:
        raise RuntimeError("query failed")

    desk.workflow.call_exists = broken_exists  # type: ignore[method-assign]
    desk.workflow.live_calls = broken_count  # type: ignore[method-assign]
    result = await desk.deliver()
    assert result.body == {"status": "accepted", "profile": "main"}
    assert lines()[:2] == [("WARNING", f"call {CALL}: call_exists failed (OSError); continuing"),
                           ("WARNING", f"call {CALL}: live call count failed (RuntimeError); capacity not checked")]


async def test_a_full_instance_refuses_with_busy_here_and_says_why(make_desk, standin, lines):
    admission = Admission(1)
    assert admission.try_admit("rtc_other")
    desk = make_desk(admission=admission)
    result = await desk.deliver()
    assert answer(result) == (200, {"status": "rejected", "reason": "instance_at_capacity", "sip_status": 486},
                              CALL, "reject", "wh_1", declined("rejected", "instance_at_capacity", 486))
    assert standin.requests[0].json() == {"status_code": 486}
    assert lines()[-1] == ("WARNING", f"call {CALL} refused: this instance holds 1 calls "
                                      "(MAX_CALLS_PER_INSTANCE=1)")


@pytest.mark.parametrize("refer", [None, "tel:+14155550123"], ids=["reject", "refer"])
async def test_a_draining_app_turns_calls_away_says_so_and_records_them(make_desk, standin, lines, refer):
    flag = CountingStore(DrainState(True, "flag"))
    desk = make_desk(drain=DrainSwitch(drain_settings(status=480, refer=refer), flag))  # type: ignore[arg-type]
    result = await desk.deliver()
    if refer:
        assert answer(result) == (200, {"status": "referred", "reason": "draining"}, CALL, "refer", "wh_1",
                                  declined("referred", "draining", None))
        assert [(r.action, r.json()) for r in standin.requests] == [("refer", {"target_uri": refer})]
    else:
        assert answer(result) == (200, {"status": "rejected", "reason": "draining", "sip_status": 480}, CALL,
                                  "reject", "wh_1", declined("rejected", "draining", 480))
        assert [(r.action, r.json()) for r in standin.requests] == [("reject", {"status_code": 480})]
    assert lines() == [("INFO", f"call {CALL}: draining (flag): {'refer' if refer else 'reject 480'}")]
    assert desk.workflow.started == []


# -------------------------------------------------------------------------------- what never reaches a call


async def test_an_unauthentic_delivery_is_logged_with_the_reason(desk, lines):
    body = incoming_body()
    result = await desk.deliver(body, headers=signed_headers(new_secret(), body, ts=int(WEDNESDAY.timestamp())))
    assert answer(result) == (401, {"error": "invalid_signature"}, None, None, None, None)
    assert lines() == [("WARNING", "webhook rejected: no matching signature")]


async def test_an_oversized_body_is_logged_with_its_size(desk, lines):
    result = await desk.deliver(b"x" * (BODY_LIMIT + 1), headers={})
    assert answer(result) == (413, {"error": "payload_too_large"}, None, None, None, None)
    assert lines() == [("WARNING", f"webhook rejected: body of {BODY_LIMIT + 1} bytes is over {BODY_LIMIT}")]


async def test_a_malformed_event_answers_400_with_the_field_at_fault(desk, standin, lines):
    result = await desk.deliver(sip_body(("From", "<sip:+14255551212@h>"), call_id="../admin"))
    detail = "data.call_id: expected an opaque id of letters, digits, '_', '-', '.'"
    assert answer(result) == (400, {"error": "malformed_event", "detail": detail}, None, None, "wh_1", None)
    assert lines() == [("WARNING", f"webhook wh_1 malformed: {detail}")]
    assert standin.requests == []


async def test_another_event_type_is_ignored_and_logged_with_its_type_cut_short(desk, standin, lines):
    result = await desk.deliver(incoming_body(event_type="response.completed"))
    assert answer(result) == (200, {"status": "ignored"}, None, None, "wh_1", None)
    long_type = "x" * 100
    await desk.deliver(incoming_body(event_type=long_type), msg_id="wh_2")
    assert lines() == [("INFO", "webhook wh_1 ignored: event type response.completed"),
                       ("INFO", f"webhook wh_2 ignored: event type {'x' * 64}")]
    assert standin.requests == []


# ------------------------------------------------------------------------------------ duplicates and memory


async def test_a_call_running_elsewhere_is_a_duplicate_and_remembered(desk, standin, lines):
    asked: list[str] = []
    desk.workflow.existing.add(CALL)
    exists = desk.workflow.call_exists

    async def counting(call_id: str) -> bool:
        asked.append(call_id)
        return await exists(call_id)

    desk.workflow.call_exists = counting  # type: ignore[method-assign]
    first = await desk.deliver()
    again = await desk.deliver(msg_id="wh_2")
    assert answer(first) == (200, {"status": "duplicate", "outcome": "accepted"}, CALL, None, "wh_1", None)
    assert again.body == {"status": "duplicate", "outcome": "accepted"}
    assert asked == [CALL]  # the redelivery is answered from memory
    assert lines() == [("INFO", f"call {CALL} duplicate delivery (workflow already exists)"),
                       ("INFO", f"call {CALL} webhook wh_2 duplicate (was accepted)")]
    assert standin.requests == []


async def test_concurrent_duplicates_are_logged_as_such(desk, standin, lines):
    standin.script = {"accept": [Step(delay=0.2)]}
    body = incoming_body()
    results = await asyncio.gather(*(desk.deliver(body, msg_id=f"wh_{i}") for i in range(2)))
    assert sorted(r.body["status"] for r in results) == ["accepted", "duplicate"]
    [late] = [r for r in results if r.body["status"] == "duplicate"]
    assert answer(late) == (200, {"status": "duplicate", "outcome": "accepted"}, CALL, None, "wh_1", None)
    assert ("INFO", f"call {CALL} duplicate delivery (was accepted)") in lines()


async def test_the_memory_of_handled_calls_is_bounded_and_keeps_the_most_recent(standin, secret, monkeypatch):
    monkeypatch.setattr(shared.intake, "REMEMBERED", 2)
    intake = make_intake(standin.url, (secret,))
    wf = Workflow()
    asked: list[str] = []

    async def forgetful_exists(call_id: str) -> bool:  # as if every workflow had ended and been purged
        asked.append(call_id)
        return False

    wf.call_exists = forgetful_exists  # type: ignore[method-assign]

    async def deliver(call_id: str) -> str:
        body = incoming_body(call_id)
        result = await intake.handle(body, signed_headers(secret, body, msg_id=f"wh_{len(asked)}"), **wf.kwargs())
        return str(result.body["status"])

    try:
        assert [await deliver(c) for c in ("rtc_a", "rtc_b")] == ["accepted", "accepted"]
        assert await deliver("rtc_a") == "duplicate"  # a is now the most recently used
        assert await deliver("rtc_c") == "accepted"  # b goes
        assert [await deliver(c) for c in ("rtc_c", "rtc_a")] == ["duplicate", "duplicate"]
        assert await deliver("rtc_b") == "accepted"  # forgotten: accepted again
    finally:
        await intake._cc.aclose()
    assert asked == ["rtc_a", "rtc_b", "rtc_c", "rtc_b"]


# ---------------------------------------------------------------------------------------- reloaded rules


def _rules(instructions: str, *, tools: list[str] | None = None, known: frozenset[str] = frozenset({"lookup_order"}),
           name: str = "p"):
    profile: dict[str, Any] = {"instructions": instructions, "greeting": "Hi."}
    if tools is not None:
        profile["tools"] = tools
    return parse_rules({"numbers": {"*": name}, "profiles": {name: profile}}, tool_names=known,
                       max_call_duration_seconds=900)


async def test_reloaded_rules_apply_from_the_next_call(standin, secret):
    holder = RulesHolder(_rules("Old."))
    intake = make_intake(standin.url, (secret,), rules=holder)  # type: ignore[arg-type]
    wf = Workflow()
    try:
        for call_id in ("rtc_1", "rtc_2"):
            body = incoming_body(call_id)
            await intake.handle(body, signed_headers(secret, body, msg_id=call_id), **wf.kwargs())
            holder.swap(_rules("New."), "etag-2")
    finally:
        await intake._cc.aclose()
    assert [a.json()["instructions"] for a in standin.actions("accept")] == ["Old.", "New."]


@pytest.mark.parametrize("renamed", [False, True], ids=["same-profile-name", "profile-renamed"])
async def test_a_reload_during_a_delivery_does_not_change_the_profile_it_decided_on(standin, secret, renamed):
    holder = RulesHolder(_rules("Old."))
    intake = make_intake(standin.url, (secret,), rules=holder)  # type: ignore[arg-type]
    wf = Workflow()
    other = Workflow()

    async def exists_while_reloading(call_id: str) -> bool:
        # The first call has read its rules; now a reload lands and another call is answered under the new ones.
        holder.swap(_rules("New.", name="q" if renamed else "p"), "etag-2")
        body = incoming_body("rtc_2")
        await intake.handle(body, signed_headers(secret, body, msg_id="wh_2"), **other.kwargs())
        return False

    wf.call_exists = exists_while_reloading  # type: ignore[method-assign]
    try:
        body = incoming_body("rtc_1")
        first = await intake.handle(body, signed_headers(secret, body), **wf.kwargs())
    finally:
        await intake._cc.aclose()
    assert first.body["status"] == "accepted"
    assert [(a.call_id, a.json()["instructions"]) for a in standin.actions("accept")] == [
        ("rtc_2", "New."), ("rtc_1", "Old.")]
    assert wf.started[0][1]["profile"]["instructions"] == "Old."


async def test_a_reload_that_names_an_unresolved_mcp_setting_answers_503_until_it_resolves(
        standin, secret, lines, monkeypatch):
    monkeypatch.setenv("TEST_INTAKE_MCP_AUTH", "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/s/x)")
    holder = RulesHolder(_rules("Old."))
    intake = make_intake(standin.url, (secret,), rules=holder)  # type: ignore[arg-type]
    with_mcp = parse_rules({"numbers": {"*": "p"}, "profiles": {"p": {
        "instructions": "Mcp.", "greeting": "Hi.", "mcp_servers": [{
            "label": "orders", "url": "https://mcp.example.com/mcp",
            "headers": {"Authorization": "TEST_INTAKE_MCP_AUTH"}}]}}},
        tool_names={"lookup_order"}, max_call_duration_seconds=900)
    holder.swap(with_mcp, "etag-2")
    wf = Workflow()
    body = incoming_body()
    try:
        unavailable = await intake.handle(body, signed_headers(secret, body), **wf.kwargs())
        monkeypatch.setenv("TEST_INTAKE_MCP_AUTH", "Bearer resolved")
        retry = await intake.handle(body, signed_headers(secret, body, msg_id="wh_2"), **wf.kwargs())
    finally:
        await intake._cc.aclose()
    assert answer(unavailable) == (503, {"error": "webhook_unavailable", "setting": "TEST_INTAKE_MCP_AUTH"}, None,
                                   None, None, None)
    assert lines()[0] == ("ERROR", f"call {CALL}: webhook answered 503: mcp server orders: setting "
                                   "TEST_INTAKE_MCP_AUTH for header Authorization is not set or not resolved yet")
    assert retry.body == {"status": "accepted", "profile": "p"}
    [accept] = standin.actions("accept")
    assert [t for t in accept.json()["tools"] if t["type"] == "mcp"][0]["headers"] == {
        "Authorization": "Bearer resolved"}


def test_a_profile_naming_an_unregistered_tool_fails_at_start_up(standin, secret):
    rules = _rules("X.", tools=["lookup_order", "ghost"], known=frozenset({"lookup_order", "ghost"}))
    with pytest.raises(ValueError, match=r"^profiles\.p\.tools: tool 'ghost' is not registered$"):
        make_intake(standin.url, (secret,), rules=rules)


# ---------------------------------------------------------------------------------- timings and the trace


class Ticks:
    """A perf_counter that moves 1 ms, then 2 ms, then 3 ms... per reading."""

    def __init__(self) -> None:
        self.now = 0.0
        self.step = 0.0

    def __call__(self) -> float:
        self.now += self.step / 1000
        self.step += 1
        return self.now


async def test_each_step_of_the_ring_path_is_timed_in_milliseconds(desk, monkeypatch):
    monkeypatch.setattr(shared.intake, "time", SimpleNamespace(perf_counter=Ticks()))
    accepted = await desk.deliver()
    assert accepted.timings == pytest.approx({"verify": 1.0, "parse": 2.0, "durable_checks": 3.0, "decide": 4.0,
                                              "admit": 5.0, "accept": 6.0, "start": 7.0})
    monkeypatch.setattr(shared.intake, "time", SimpleNamespace(perf_counter=Ticks()))
    refused = await desk.deliver(incoming_body("rtc_2", caller="<sip:+19005551212@h>"))
    assert refused.timings == pytest.approx({"verify": 1.0, "parse": 2.0, "durable_checks": 3.0, "decide": 4.0})
    unauthentic = await desk.deliver(headers={})
    assert unauthentic.timings == {}


async def test_the_delivery_is_traced_with_the_call_id_and_the_routing_decision(desk):
    mem = memory()
    with telemetry.span("webhook.test") as root:
        await desk.deliver(incoming_body(dialed="<sip:+18005550100@h>"))
        trace_id = root.get_span_context().trace_id
    spans = {s.name: s for s in mem.spans() if s.context.trace_id == trace_id}
    assert {"webhook.test", "webhook.verify", "call.route"} <= set(spans)
    assert spans["webhook.test"].attributes[telemetry.CALL_ID] == CALL  # bound once the event is parsed
    route = spans["call.route"].attributes
    assert (route[telemetry.CALL_ID], route["route.action"], route["route.reason"], route["route.profile"]) == (
        CALL, "refer", "after_hours", "night")
