"""Engine spans that a plain call does not produce: a sideband dropped mid-call is reopened in a
``sideband.reconnect`` span under the same activity span; the greeting is measured once."""

from __future__ import annotations

from emulator.testing import emulator_factory  # noqa: F401  (fixture)
from localrun.telemetry import memory
from shared import telemetry
from tests.engine.helpers import Harness, scenario


async def test_a_dropped_sideband_is_reconnected_in_a_reconnect_span(emulator_factory) -> None:  # noqa: F811
    mem = memory()
    emu = await emulator_factory(speech_seconds_per_char=0.002)
    h = Harness(emu)
    try:
        call = await h.start_call(scenario([{"say": "first question"}, {"drop_sideband": True}, {"wait": 0.3},
                                            {"say": "second question"}]))
        with telemetry.invocation("activity.converse", None, call_id=call["call_id"]):
            summary = await h.converse(call)
    finally:
        await h.aclose()
    spans = [s for s in mem.spans() if (s.attributes or {}).get(telemetry.CALL_ID) == call["call_id"]]
    names = [s.name for s in spans]
    # The drop is reconnected; at the end the caller hangs up (1006 again) and the reconnect that tells a
    # hang-up from a drop finds the call gone (404): a failed span, by type.
    assert names.count("sideband.connect") == 1 and names.count("sideband.reconnect") == 2
    reconnected, gone = sorted((s for s in spans if s.name == "sideband.reconnect"), key=lambda s: s.start_time)
    root = next(s for s in spans if s.name == "activity.converse")
    assert reconnected.parent.span_id == root.context.span_id and reconnected.attributes["attempt"] == 1
    assert reconnected.status.is_ok
    assert gone.attributes["error.type"] == "CallGone"
    # Greeted once, measured once; the speech after the reconnect is not a second greeting.
    assert summary["greeting_ms"] is not None and root.attributes["call.greeting_ms"] == summary["greeting_ms"]
