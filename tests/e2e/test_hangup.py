"""End-to-end (issue 9, part 1): a failed hangup does not leave the caller on the line. sipp calls the emulator,
whose /hangup answers 500 three times; the app runs under the local runner with Azurite."""

from __future__ import annotations

from tests.e2e.conftest import SHORT, SHORT_MAX_S


def _t(call: dict, state: str) -> float:
    return next(s["t"] for s in call["states"] if s["state"] == state)


def test_a_hangup_that_fails_three_times_still_ends_the_call_on_time_with_one_record(phone):
    sipp, (call_id,) = phone.call("uac_accept_bye_recv", scenario="e2e_hangup_fails", dialed=SHORT)
    assert sipp.wait(40) == 0, sipp.log()  # sipp saw the BYE: the line was dropped
    call = phone.wait_ended(call_id)
    assert call["ended_reason"] == "hangup"
    # converse's hangup at the time limit got the three 500s; the orchestrator's hangup_call got the 200.
    assert [r["status"] for r in call["hangup_requests"]] == [500, 500, 500, 200]
    ended, accepted = _t(call, "ended"), _t(call, "accepted")
    print(f"call ended {ended - accepted:.2f} s after accept (limit {SHORT_MAX_S} s, goal <= +5 s)")
    assert SHORT_MAX_S - 1.0 <= ended - accepted <= SHORT_MAX_S + 5.0, ended - accepted

    record = phone.record(call_id)
    assert record["hangup_confirmed"] is True
    assert record["ended_by"] == "call_ended" and record["outcome"] == "timed_out"
    assert "hangup request failed" in record["reason"]
    assert record["duration_seconds"] <= SHORT_MAX_S + 5.0
    phone.assert_no_other_record(call_id)

    orchestration = phone.orchestration(call_id, history=True)
    assert orchestration["runtimeStatus"] == "Completed"
    assert orchestration["output"]["hangup_confirmed"] is True
    assert orchestration["customStatus"]["state"] == "ended"
    names = [e.get("Name") for e in orchestration["historyEvents"] if e["EventType"] == "TaskScheduled"]
    assert names == ["converse", "hangup_call", "publish_call_record"], names
