"""End-to-end: sipp calls the emulator's SIP front door; the emulator signs the webhook to the app running under
the local runner; the app accepts or rejects, converses on the sideband and publishes the record to Azurite."""

from __future__ import annotations

import json
import time
from datetime import datetime

from localrun.stack import http_json
from tests.e2e.conftest import CLOSED, DENIED_CALLER, SHORT, SHORT_MAX_S


def _wait_line(stack, text: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [line for line in stack.logs("app") if text in line]
        if found:
            return found[-1]
        time.sleep(0.1)
    raise AssertionError(f"no app line with {text!r}; last lines: {stack.logs('app')[-10:]}")


def _t(call: dict, state: str) -> float:
    return next(s["t"] for s in call["states"] if s["state"] == state)


def test_accepted_call_greets_uses_a_tool_and_the_agent_hangs_up(phone):
    sipp, (call_id,) = phone.call("uac_accept_bye_recv", scenario="e2e_agent_ends")
    assert sipp.wait(60) == 0, sipp.log()  # sipp saw 200 OK, then the emulator's BYE
    log = sipp.log()
    assert "SIP/2.0 200 OK" in log and "BYE sip:" in log
    call = phone.wait_ended(call_id)
    assert call["ended_reason"] == "hangup"  # the app's /hangup, not the caller
    record = phone.record(call_id)
    assert record["outcome"] == "agent_ended"
    assert record["caller"] == "+1425***1212" and record["profile_name"] == "reception"
    assert [t["name"] for t in record["tools"]] == ["lookup_order", "end_call"] and record["tools"][0]["ok"]
    texts = [(t["role"], t["text"]) for t in record["transcript"]]
    assert texts[0] == ("agent", "Thank you for calling Example Corp. How can I help?") or texts[0][0] == "agent"
    assert ("caller", "Hi, where is my order 1234?") in texts
    assert ("caller", "Great, thanks. Goodbye!") in texts
    assert 0 < record["greeting_ms"] < 10_000 and all(t["latency_ms"] >= 0 for t in record["tools"])


def test_make_up_prints_one_timing_line_per_call(phone, stack):
    sipp, (call_id,) = phone.call("uac_accept_bye_recv", scenario="e2e_agent_ends")
    assert sipp.wait(60) == 0, sipp.log()
    record = phone.record(call_id)
    line = _wait_line(stack, f"call {call_id}: accept ")
    assert f"greeting {record['greeting_ms']:.0f} ms" in line
    assert "tools lookup_order " in line and f"end agent_ended ({record['ended_by']})" in line


def test_after_hours_call_is_rejected_with_the_configured_code(phone, stack):
    sipp, (call_id,) = phone.call("uac_reject", dialed=CLOSED)
    assert sipp.wait(30) == 0, sipp.log()
    assert "SIP/2.0 480 " in sipp.log()
    call = phone.wait_ended(call_id)
    assert call["state"] == "rejected" and call["reject_status"] == 480
    assert phone.orchestration(call_id) is None
    # A declined call still gets its record, with the routing reason and the SIP code, and a timing line.
    record = phone.record(call_id)
    assert (record["outcome"], record["reason"], record["sip_status"], record["ended_by"]) == (
        "rejected", "holiday", 480, "routing")  # the closed profile has today as a holiday
    assert record["caller"] == "+1425***1212" and record["transcript"] == []
    _wait_line(stack, f"call {call_id}: rejected (holiday, SIP 480)")


def test_denied_caller_is_rejected_with_403(phone):
    sipp, (call_id,) = phone.call("uac_reject", caller=DENIED_CALLER)
    assert sipp.wait(30) == 0, sipp.log()
    assert "SIP/2.0 403 " in sipp.log()
    assert phone.wait_ended(call_id)["reject_status"] == 403
    assert phone.orchestration(call_id) is None


def test_max_duration_hangs_up_on_time_even_when_converse_is_killed_and_retried(phone, stack):
    sipp, (call_id,) = phone.call("uac_accept_bye_recv", scenario="e2e_chatty", dialed=SHORT)
    call = phone.wait_state(call_id, "accepted")
    accepted = _t(call, "accepted")
    # Kill the converse activity mid-call, as if its worker died; Durable retries it and the call goes on.
    time.sleep(3)
    status, body = http_json("POST", f"{stack.app_url}/admin/durable/instances/{call_id}/kill-activity?name=converse",
                             headers={"x-functions-key": stack.master_key})
    assert status == 202 and body == {"killed": 1}, body
    assert sipp.wait(40) == 0, sipp.log()  # the BYE came from the emulator
    call = phone.wait_ended(call_id)
    ended = _t(call, "ended")
    assert call["ended_reason"] == "hangup"
    assert SHORT_MAX_S - 1.0 <= ended - accepted <= SHORT_MAX_S + 3.0, ended - accepted
    record = phone.record(call_id)
    assert record["outcome"] == "timed_out"
    assert record["duration_seconds"] <= SHORT_MAX_S + 3.0
    # Durable saw the killed attempt fail and scheduled converse again (the retry reconnected to the call).
    history = phone.orchestration(call_id, history=True)["historyEvents"]
    converse = [e for e in history if e["EventType"] == "TaskScheduled" and e.get("Name") == "converse"]
    failed = [e for e in history if e["EventType"] == "TaskFailed"]
    assert len(converse) >= 2 and failed, [e["EventType"] for e in history]


def test_caller_hangs_up_mid_sentence(phone):
    # The greeting takes ~2 s to speak; sipp sends BYE 1.2 s after the 200 OK, while the agent is talking.
    sipp, (call_id,) = phone.call("uac_caller_hangup", scenario="e2e_chatty", pause_ms=1200)
    assert sipp.wait(30) == 0, sipp.log()
    call = phone.wait_ended(call_id)
    assert call["ended_reason"] == "caller_hangup"
    record = phone.record(call_id)
    assert record["outcome"] == "caller_hung_up"


def test_operator_transfer_sends_refer_to_the_caller(phone):
    sipp, (call_id,) = phone.call("uac_refer", scenario="e2e_chatty")
    phone.wait_state(call_id, "accepted")
    deadline = time.monotonic() + 10
    while True:  # the call shows up in the operator API once the orchestration has set its status
        status, body = phone.operator("GET", "calls")
        if status == 200 and call_id in [c["call_id"] for c in body["calls"]]:
            break
        assert time.monotonic() < deadline, body
        time.sleep(0.1)
    while True:  # the live view's last turn comes from the turns table the converse activity writes
        status, view = phone.operator("GET", f"calls/{call_id}")
        if status == 200 and view.get("last_turn"):
            break
        assert time.monotonic() < deadline, view
        time.sleep(0.1)
    assert view["state"] == "live" and view["last_turn"]["role"] in ("agent", "caller") and view["last_turn"]["text"]
    assert "+1425" not in json.dumps(view).replace("+1425***", "")
    status, body = phone.operator("POST", f"calls/{call_id}/transfer", {"target": "nowhere"})
    assert status == 400 and "allowed: sales, support" in body["error"]
    status, body = phone.operator("POST", f"calls/{call_id}/transfer", {"target": "sales"})
    assert status == 202, body
    assert sipp.wait(30) == 0, sipp.log()  # sipp received REFER (answered 202), then BYE
    assert "REFER sip:" in sipp.log() and "Refer-To: <tel:+14155550123>" in sipp.log()
    record = phone.record(call_id)
    assert record["ended_by"] == "operator_transfer"
    assert record["outcome"] == "transferred" and record["transfer_target"] == "sales"
    status, _ = phone.operator("GET", "calls/rtc_unknown")
    assert status == 404


def test_operator_hangup_ends_the_call_with_a_bye(phone):
    sipp, (call_id,) = phone.call("uac_accept_bye_recv", scenario="e2e_chatty")
    phone.wait_state(call_id, "accepted")
    deadline = time.monotonic() + 15
    while True:  # hang up once the caller has heard something: the greeting is a finished turn
        status, view = phone.operator("GET", f"calls/{call_id}")
        if status == 200 and view.get("last_turn"):
            break
        assert time.monotonic() < deadline, (status, view)
        time.sleep(0.1)
    status, body = phone.operator("POST", f"calls/{call_id}/hangup")
    assert status == 202, body
    assert sipp.wait(30) == 0, sipp.log()  # the BYE came from the emulator after our /hangup
    call = phone.wait_ended(call_id)
    assert call["ended_reason"] == "hangup"
    record = phone.record(call_id)
    assert record["ended_by"] == "operator_hangup"
    assert record["transcript"] and record["transcript"][0]["role"] == "agent"  # converse's summary made it in
    status, body = phone.operator("POST", f"calls/{call_id}/hangup")
    assert status in (404, 409), body  # the call is over: nothing to hang up


def test_duplicate_webhook_delivery_produces_one_call(phone):
    sipp, (call_id,) = phone.call("uac_accept_bye_recv", scenario="e2e_duplicate")
    assert sipp.wait(60) == 0, sipp.log()
    assert sipp.log().count("SIP/2.0 200 OK") >= 1
    call = phone.wait_ended(call_id)
    deliveries = [a for a in call["webhook_attempts"] if 200 <= (a.get("status") or 0) < 300]
    assert len(deliveries) >= 2, call["webhook_attempts"]  # the platform delivered twice, both acknowledged
    assert len(phone.durable_instances(call_id)) == 1
    accepts = [e for e in call["states"] if e["state"] == "accepted"]
    assert len(accepts) == 1
    record = phone.record(call_id)
    assert record["outcome"] == "agent_ended"
    time.sleep(1.0)  # a second record would have been published by now
    try:
        phone.record(call_id, timeout=1.0)
    except TimeoutError:
        pass
    else:
        raise AssertionError("a second record was published for the same call")


def test_twenty_concurrent_calls_all_complete_with_correct_records(phone):
    sipp, call_ids = phone.call("uac_accept_bye_recv", scenario="e2e_agent_ends", calls=20, rate=20, timeout_s=90)
    assert len(set(call_ids)) == 20
    assert sipp.wait(120) == 0, sipp.log()[-5000:]
    records = phone.records(call_ids, timeout=30)
    assert set(records) == set(call_ids)
    for cid, record in records.items():
        assert record["call_id"] == cid and record["outcome"] == "agent_ended", record
        assert [t["name"] for t in record["tools"]] == ["lookup_order", "end_call"]


def test_a_call_survives_the_app_process_dying_mid_call(phone, stack):
    """SIGKILL the whole app mid-call. The restarted process reads the task hub, runs `converse` again (it rejoins
    the call on a new sideband) and re-arms the deadline: the call still ends on time with exactly one record."""
    sipp, (call_id,) = phone.call("uac_accept_bye_recv", scenario="e2e_chatty", dialed=SHORT)
    call = phone.wait_state(call_id, "accepted")
    accepted = _t(call, "accepted")
    time.sleep(2)
    crashed_at = time.time()
    stack.crash_app()
    assert phone.emulator(call_id)["state"] == "accepted"  # the caller is still on the line, nobody drives it
    stack.restart_app()
    resumed_at = time.time()
    assert any(f"resumed instance {call_id}" in line for line in stack.logs("app")), stack.logs("app")[-20:]
    assert sipp.wait(40) == 0, sipp.log()
    call = phone.wait_ended(call_id)
    assert call["ended_reason"] == "hangup"
    assert SHORT_MAX_S - 1.0 <= _t(call, "ended") - accepted <= SHORT_MAX_S + 3.0, _t(call, "ended") - accepted
    record = phone.record(call_id)
    assert record["outcome"] == "timed_out"
    # The transcript spans both processes: turns said before the crash came back from the turns table.
    said_at = [datetime.fromisoformat(t["at"].replace("Z", "+00:00")).timestamp() for t in record["transcript"]]
    assert said_at == sorted(said_at) and record["transcript"][0]["role"] == "agent"
    assert min(said_at) < crashed_at < resumed_at < max(said_at), (crashed_at, resumed_at, said_at)
    history = phone.orchestration(call_id, history=True)["historyEvents"]
    converse = [e for e in history if e["EventType"] == "TaskScheduled" and e.get("Name") == "converse"]
    assert len(converse) == 1  # the same scheduled attempt, run again: no failure was ever recorded
    published = [e for e in history if e["EventType"] == "TaskScheduled" and e.get("Name") == "publish_call_record"]
    assert len(published) == 1
    phone.assert_no_other_record(call_id)


def test_a_caller_who_leaves_while_the_app_is_down_still_gets_one_record(phone, stack):
    sipp, (call_id,) = phone.call("uac_accept_bye_recv", scenario="e2e_chatty")
    phone.wait_state(call_id, "accepted")
    time.sleep(1.5)
    stack.crash_app()
    status, body = http_json("POST", f"{stack.emulator_url}/_emulator/calls/{call_id}/hangup")
    assert status == 200 and body["state"] == "ended", body
    assert sipp.wait(30) == 0, sipp.log()
    stack.restart_app()
    # The re-run converse finds the call gone (404 on the sideband), so the orchestration publishes and ends.
    record = phone.record(call_id)
    assert record["outcome"] == "caller_hung_up", record
    assert record["transcript"] and record["transcript"][0]["role"] == "agent"  # the turns before the crash
    assert phone.orchestration(call_id)["runtimeStatus"] == "Completed"
    assert phone.emulator(call_id)["ended_reason"] == "caller_hangup"  # the app did not hang up a gone call
    phone.assert_no_other_record(call_id)


def test_an_accepted_call_whose_workflow_cannot_start_is_hung_up_and_still_recorded(phone, stack):
    status, body = http_json("POST", f"{stack.app_url}/admin/durable/fail-starts?count=1",
                             headers={"x-functions-key": stack.master_key})
    assert status == 202, body
    sipp, (call_id,) = phone.call("uac_accept_bye_recv")
    assert sipp.wait(30) == 0, sipp.log()  # 200 OK, then our hangup's BYE: the caller is not left in silence
    call = phone.wait_ended(call_id)
    assert call["ended_reason"] == "hangup"
    assert call["webhook_attempts"][0]["status"] == 500  # the platform is told something went wrong
    assert phone.orchestration(call_id) is None
    record = phone.record(call_id)
    assert (record["outcome"], record["ended_by"]) == ("failed", "start_failed")
    assert "could not be started" in record["reason"] and record["caller"] == "+1425***1212"
    phone.assert_no_other_record(call_id)
