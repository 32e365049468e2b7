"""Per-instance admission (MAX_CALLS_PER_INSTANCE): the count, and the intake refusing cleanly with 486 when full."""

from __future__ import annotations

from shared.admission import RESERVATION_SECONDS, Admission
from shared.intake import BUSY_HERE

from .conftest import incoming_body, signed_headers
from .harness import Workflow, make_intake
from .standin import NOT_FOUND, SERVER_ERROR, Step


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_reservations_then_running_calls_fill_the_instance_and_free_it_again() -> None:
    clock = Clock()
    a = Admission(2, clock=clock)
    assert a.try_admit("c1") and a.try_admit("c2")
    assert not a.try_admit("c3")  # full
    assert a.try_admit("c1")  # a call already counted is not counted twice (redelivery)
    a.started("c1")
    a.started("c1")  # a retried converse of the same call in this process: still one call
    assert a.live == 2
    a.ended("c1")
    assert a.live == 2 and not a.try_admit("c3")  # the retry still runs
    a.ended("c1")
    assert a.live == 1 and a.try_admit("c3")
    a.release("c3")
    assert a.live == 1


def test_a_reservation_whose_converse_never_starts_here_lapses() -> None:
    clock = Clock()
    a = Admission(1, clock=clock)
    assert a.try_admit("elsewhere")
    assert not a.try_admit("next")
    clock.t += RESERVATION_SECONDS + 0.1
    assert a.try_admit("next")


def test_no_limit_admits_everything() -> None:
    a = Admission(None)
    assert all(a.try_admit(f"c{i}") for i in range(1000)) and a.live == 1000


async def _deliver(intake, secret, call_id: str, wf: Workflow):
    body = incoming_body(call_id)
    return await intake.handle(body, signed_headers(secret, body, msg_id=f"wh_{call_id}"), **wf.kwargs())


async def test_a_full_instance_rejects_486_without_accepting_or_starting_anything(standin, secret) -> None:
    intake = make_intake(standin.url, (secret,))
    intake._admission = Admission(2)
    wf = Workflow()
    try:
        first = [await _deliver(intake, secret, f"rtc_{i}", wf) for i in range(2)]
        refused = await _deliver(intake, secret, "rtc_2", wf)
        intake._admission.started("rtc_0")
        intake._admission.ended("rtc_0")  # a call ends: there is room again
        later = await _deliver(intake, secret, "rtc_3", wf)
    finally:
        await intake._cc.aclose()
    assert [r.body["status"] for r in first] == ["accepted", "accepted"]
    assert (refused.status, refused.body) == (
        200, {"status": "rejected", "reason": "instance_at_capacity", "sip_status": BUSY_HERE})
    [reject] = standin.actions("reject")
    assert reject.call_id == "rtc_2" and reject.json() == {"status_code": BUSY_HERE}
    assert [c.call_id for c in standin.actions("accept")] == ["rtc_0", "rtc_1", "rtc_3"]
    assert [cid for cid, _ in wf.started] == ["rtc_0", "rtc_1", "rtc_3"]
    assert later.body["status"] == "accepted"
    # The ring path is timed step by step (the webhook returns it as Server-Timing).
    assert list(first[0].timings) == ["verify", "parse", "durable_checks", "decide", "admit", "accept", "start"]
    assert list(refused.timings) == ["verify", "parse", "durable_checks", "decide"]
    assert all(ms >= 0 for ms in first[0].timings.values())


async def test_a_call_that_was_not_accepted_gives_its_place_back(standin, secret) -> None:
    standin.script = {"accept": [NOT_FOUND, SERVER_ERROR, Step()]}
    intake = make_intake(standin.url, (secret,), read_timeout=0.3)
    intake._admission = Admission(1)
    wf = Workflow()
    try:
        gone = await _deliver(intake, secret, "rtc_gone", wf)
        failed = await _deliver(intake, secret, "rtc_5xx", wf)
        assert intake._admission.live == 0
        ok = await _deliver(intake, secret, "rtc_ok", wf)
    finally:
        await intake._cc.aclose()
    assert gone.body == {"status": "caller_gone"} and failed.status == 502
    assert ok.body["status"] == "accepted" and intake._admission.live == 1
