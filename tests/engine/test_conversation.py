"""The conversation engine against the emulator, over real sockets (issue #4)."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from call_workflow import agent_tools
from shared.routing import parse_rules
from shared.tools import ToolError, ToolRegistry
from shared.tools import registry as global_registry
from shared.transcript import greeting_instructions, parse_iso

from .helpers import PROFILE, Harness, profile, scenario

GREETING = PROFILE["greeting"]


@pytest.fixture
async def harness(emulator_factory):
    emu = await emulator_factory(speech_seconds_per_char=0.002)
    h = Harness(emu)
    yield h
    await h.aclose()


async def test_greeting_first_and_every_client_event_is_valid(harness: Harness) -> None:
    call = await harness.start_call(scenario([{"say": "Hi, I have a question."}]))
    summary = await harness.converse(call)
    cid = call["call_id"]

    events = harness.client_events(cid)
    assert events[0]["type"] == "response.create"
    assert events[0]["response"]["instructions"] == greeting_instructions(GREETING)
    assert harness.instructions(cid).count(greeting_instructions(GREETING)) == 1
    harness.validate_all(cid)  # (the emulator refuses an `OpenAI-Beta: realtime=v1` sideband outright)

    assert summary["outcome"] == "caller_hung_up"
    assert [t["role"] for t in summary["transcript"]] == ["agent", "caller", "agent"]
    assert summary["transcript"][0]["text"] == GREETING
    assert summary["transcript"][1]["text"] == "Hi, I have a question."
    assert summary["started_at"] == call["accepted_at"]
    usages = [e["response"]["usage"] for _, e in harness.server_events(cid, "response.done")]
    assert summary["usage"] == {k: sum(u[k] for u in usages) for k in ("input_tokens", "output_tokens", "total_tokens")}
    assert summary["usage"]["total_tokens"] > 0
    # The caller hung up: the engine asked the platform for nothing.
    assert harness.control.requests == []
    json.dumps(summary)  # Durable needs it JSON-serialisable


async def test_tool_call_is_answered_and_spoken(emulator_factory) -> None:
    emu = await emulator_factory(speech_seconds_per_char=0.002)
    h = Harness(emu, registry=global_registry)  # the example tools of call_workflow/agent_tools.py
    try:
        sc = scenario(
            [{"say": "Where is order 1234?"}],
            rules=[{"match": r"order (?P<id>\d+)", "regex": True,
                    "call": {"name": "lookup_order", "arguments": {"order_id": "{id}"}}}],
            after_function={"lookup_order": "Your order is {status}."},
        )
        call = await h.start_call(sc, profile(tools=["lookup_order"]))
        summary = await h.converse(call)
    finally:
        await h.aclose()
    cid = call["call_id"]
    expected = await agent_tools.lookup_order("1234")
    outputs = h.function_outputs(cid)
    assert len(outputs) == 1 and json.loads(outputs[0]["output"]) == expected
    # The output is followed by a response.create, or the model would stay silent.
    types = [e["type"] for e in h.client_events(cid)]
    i = types.index("conversation.item.create")
    assert "response.create" in types[i + 1:]
    assert summary["tools"] == [{"name": "lookup_order", "arguments": {"order_id": "1234"}, "ok": True,
                                 "at": summary["tools"][0]["at"], "latency_ms": summary["tools"][0]["latency_ms"]}]
    assert 0 <= summary["tools"][0]["latency_ms"] < 5000
    assert summary["transcript"][-1] == {**summary["transcript"][-1], "role": "agent",
                                         "text": f"Your order is {expected['status']}."}
    h.validate_all(cid)


async def test_failing_and_slow_tools_return_errors_and_the_call_goes_on(harness: Harness, caplog) -> None:
    caplog.set_level(logging.INFO, logger="switchboard")
    reg = ToolRegistry()

    @reg.register("broken", description="Always fails", parameters={"type": "object", "properties": {}})
    async def broken() -> dict:
        raise RuntimeError("connection string AccountKey=supersecret")

    @reg.register("picky", description="Refuses", parameters={"type": "object", "properties": {}})
    async def picky() -> dict:
        raise ToolError("that order does not exist")

    @reg.register("slow", description="Too slow", parameters={"type": "object", "properties": {}},
                  timeout_seconds=0.2)
    async def slow() -> dict:
        await asyncio.sleep(5)
        return {"never": True}

    harness.registry = reg
    sc = scenario(
        [{"say": "try broken"}, {"say": "try picky"}, {"say": "try slow"}, {"say": "thanks anyway"}],
        rules=[{"match": "broken", "call": {"name": "broken"}}, {"match": "picky", "call": {"name": "picky"}},
               {"match": "slow", "call": {"name": "slow"}}, {"match": "thanks", "say": "You're welcome."}],
        after_function={"broken": "Sorry, that failed.", "picky": "Hmm: {error}", "slow": "That took too long."},
    )
    call = await harness.start_call(sc, profile(tools=["broken", "picky", "slow"]))
    summary = await harness.converse(call)
    cid = call["call_id"]
    outputs = [json.loads(o["output"]) for o in harness.function_outputs(cid)]
    assert outputs[0] == {"error": "the tool failed"}  # never the exception text (it may hold secrets)
    assert outputs[1] == {"error": "that order does not exist"}  # ToolError text is meant for the model
    assert "did not answer within 0.2 seconds" in outputs[2]["error"]
    assert "supersecret" not in json.dumps(harness.client_events(cid))
    assert "supersecret" not in caplog.text  # the exception text may hold secrets: not logged above DEBUG
    assert "tool broken raised RuntimeError at test_conversation.py" in caplog.text
    assert [(t["name"], t["ok"]) for t in summary["tools"]] == [("broken", False), ("picky", False), ("slow", False)]
    texts = [t["text"] for t in summary["transcript"] if t["role"] == "agent"]
    assert "Hmm: that order does not exist" in texts
    assert texts[-1] == "You're welcome."  # the call went on after three failures
    assert summary["outcome"] == "caller_hung_up"
    harness.validate_all(cid)


async def test_transfer_to_a_named_target(harness: Harness) -> None:
    sc = scenario([{"say": "Put me through to sales please"}], on_end="stay",
                  rules=[{"match": "sales", "say": "Transferring you to sales.",
                          "call": {"name": "transfer_call", "arguments": {"target": "sales"}}}])
    call = await harness.start_call(sc)
    summary = await harness.converse(call)
    cid = call["call_id"]
    assert harness.emu.calls[cid].refer_target == "tel:+14155550123"
    assert harness.control.actions() == ["refer"]
    assert summary["outcome"] == "transferred" and summary["transfer_target"] == "sales"
    # The refer waited until the handoff line had played.
    stopped = [t for t, _ in harness.server_events(cid, "output_audio_buffer.stopped")]
    assert harness.control.requests[0][0] >= stopped[-1]
    assert summary["tools"][0]["name"] == "transfer_call" and summary["tools"][0]["ok"] is True


async def test_transfer_to_an_unknown_target_is_refused(harness: Harness) -> None:
    sc = scenario([{"say": "Transfer me to +19005550000"}, {"say": "ok then"}],
                  rules=[{"match": "transfer", "call": {"name": "transfer_call",
                                                        "arguments": {"target": "+19005550000"}}}],
                  after_function={"transfer_call": "I can't transfer you there."})
    call = await harness.start_call(sc)
    summary = await harness.converse(call)
    cid = call["call_id"]
    out = json.loads(harness.function_outputs(cid)[0]["output"])
    assert "unknown transfer target" in out["error"] and out["available_targets"] == ["sales", "support"]
    assert harness.emu.calls[cid].refer_target is None and harness.control.requests == []
    assert summary["outcome"] == "caller_hung_up" and summary["transfer_target"] is None
    assert summary["tools"][0]["ok"] is False
    assert "I can't transfer you there." in [t["text"] for t in summary["transcript"]]


async def test_end_call_hangs_up_after_the_goodbye_has_played(emulator_factory) -> None:
    # 10 ms per character: the goodbye plays for ~0.3 s after its response is done.
    emu = await emulator_factory(speech_seconds_per_char=0.01)
    h = Harness(emu)
    try:
        sc = scenario([{"say": "that's all, bye"}], on_end="stay",
                      rules=[{"match": "bye", "say": "Goodbye, thanks for calling!", "call": {"name": "end_call"}}])
        call = await h.start_call(sc)
        summary = await h.converse(call)
    finally:
        await h.aclose()
    cid = call["call_id"]
    assert summary["outcome"] == "agent_ended"
    assert h.control.actions() == ["hangup"]
    hangup_at = h.control.requests[0][0]
    done = [(t, e) for t, e in h.server_events(cid, "response.done")
            if any(o.get("name") == "end_call" for o in e["response"]["output"])]
    rid = done[0][1]["response"]["id"]
    stopped = [t for t, e in h.server_events(cid, "output_audio_buffer.stopped") if e["response_id"] == rid]
    assert stopped, "the goodbye was cut off"
    # The order that matters: the goodbye's response ends, its audio drains, and only then the hangup.
    assert done[0][0] < stopped[0] <= hangup_at
    assert stopped[0] - done[0][0] > 0.1  # the wait was real: audio was still playing at response.done
    assert emu.calls[cid].ended_reason == "hangup"
    assert summary["transcript"][-1]["text"] == "Goodbye, thanks for calling!"


async def test_keypad_menu_actions_and_unmapped_digits(harness: Harness) -> None:
    prof = profile(digits={"mode": "menu", "menu": {"2": {"action": "say", "text": "Our hours are nine to five."},
                                                    "1": {"action": "transfer", "target": "sales"}}})
    sc = scenario([{"dtmf": "2"}, {"dtmf": "7"}, {"wait": 0.4}, {"dtmf": "1"}], on_end="stay")
    call = await harness.start_call(sc, prof)
    summary = await harness.converse(call)
    cid = call["call_id"]
    instructions = harness.instructions(cid)
    assert any("Our hours are nine to five." in i for i in instructions)
    messages = [c["text"] for e in harness.client_events(cid, "conversation.item.create")
                if e["item"]["type"] == "message" for c in e["item"]["content"]]
    assert messages == ["The caller pressed 7 on the keypad."]  # only the unmapped digit reaches the model
    assert harness.emu.calls[cid].refer_target == "tel:+14155550123"
    assert any("Transferring your call now." in i for i in instructions)  # announced before the refer
    assert summary["digits"] == "271" and summary["outcome"] == "transferred"
    harness.validate_all(cid)


def menu_from_rules(menu: dict) -> dict:
    """A profile's `digits` as routing.json gives them to the engine: through the rules' own validator."""
    data = {"numbers": {"*": "reception"},
            "profiles": {"reception": {"instructions": "x", "greeting": "Hello!",
                                       "transfer_targets": PROFILE["transfer_targets"],
                                       "digits": {"mode": "menu", "menu": menu}}}}
    rules = parse_rules(data, tool_names=(), max_call_duration_seconds=900)
    return rules.profiles["reception"].digits or {}


async def test_a_menu_end_call_or_transfer_says_its_text_first(emulator_factory) -> None:
    # docs/engine.md: a menu `end_call` or `transfer` may carry a `text`, spoken before the call ends or moves.
    digits = menu_from_rules({"0": {"action": "end_call", "text": "Thanks for calling Example Corp. Goodbye!"},
                              "1": {"action": "transfer", "target": "support", "text": "Putting you through."}})
    emu = await emulator_factory(speech_seconds_per_char=0.01)  # the goodbye plays for ~0.4 s
    h = Harness(emu)
    try:
        ended = await h.start_call(scenario([{"dtmf": "0"}], on_end="stay"), profile(digits=digits))
        end_summary = await h.converse(ended)
        moved = await h.start_call(scenario([{"dtmf": "1"}], on_end="stay"), profile(digits=digits))
        move_summary = await h.converse(moved)
    finally:
        await h.aclose()

    cid = ended["call_id"]
    assert end_summary["outcome"] == "agent_ended" and end_summary["digits"] == "0"
    assert end_summary["transcript"][-1] == {**end_summary["transcript"][-1], "role": "agent",
                                             "text": "Thanks for calling Example Corp. Goodbye!"}
    assert any("Thanks for calling Example Corp. Goodbye!" in i for i in h.instructions(cid))
    hangup_at = next(t for t, action, _ in h.control.requests if action == "hangup")
    stopped = [t for t, _ in h.server_events(cid, "output_audio_buffer.stopped")]
    assert stopped and stopped[-1] <= hangup_at, "the goodbye was cut off by the hangup"

    cid = moved["call_id"]
    assert move_summary["outcome"] == "transferred" and emu.calls[cid].refer_target == "sip:support@example.com"
    instructions = h.instructions(cid)
    assert any("Putting you through." in i for i in instructions)
    assert not any("Transferring your call now." in i for i in instructions)  # the menu's text, not the default
    refer_at = next(t for t, action, _ in h.control.requests if action == "refer")
    spoken = [t for t, e in h.server_events(cid, "response.output_audio_transcript.done")
              if e.get("transcript") == "Putting you through."]
    assert spoken and spoken[0] <= refer_at
    h.validate_all(cid)


async def test_keypad_digits_go_to_the_model_as_one_message(harness: Harness) -> None:
    sc = scenario([{"dtmf": "123#"}, {"wait": 0.3}],
                  rules=[{"match": "pressed 123#", "say": "Thanks, account 123 found."}])
    call = await harness.start_call(sc)
    summary = await harness.converse(call)
    cid = call["call_id"]
    messages = [e["item"]["content"][0]["text"] for e in harness.client_events(cid, "conversation.item.create")]
    assert messages == ["The caller pressed 123# on the keypad."]
    assert summary["digits"] == "123#"
    assert "Thanks, account 123 found." in [t["text"] for t in summary["transcript"]]


async def test_silence_prompts_once_then_hangs_up_idle(emulator_factory) -> None:
    # Slow enough generation that the service's own reply to the timeout is still in progress when cancelled.
    emu = await emulator_factory(speech_seconds_per_char=0.01)
    h = Harness(emu)
    try:
        sc = scenario([{"silence": True}, {"say": "sorry, I'm here"}, {"silence": True}, {"silence": True}],
                      on_end="stay", rules=[{"match": "here", "say": "No problem."}],
                      on_idle="Model says: are you there?")
        call = await h.start_call(sc)
        summary = await h.converse(call)
    finally:
        await h.aclose()
    cid = call["call_id"]
    prompt, goodbye = PROFILE["silence"]["prompt"], PROFILE["silence"]["goodbye"]
    instructions = h.instructions(cid)
    # Speech between the silences reset the counter: prompted twice, goodbye once.
    assert sum(prompt in i for i in instructions) == 2
    assert sum(goodbye in i for i in instructions) == 1
    assert summary["outcome"] == "idle" and h.control.actions() == ["hangup"]
    agent = [t["text"] for t in summary["transcript"] if t["role"] == "agent"]
    assert agent.count(prompt) == 2 and agent[-1] == goodbye
    # The service's own answer to the timeout was cancelled: the caller never heard two voices.
    assert "Model says: are you there?" not in agent
    stopped = [t for t, _ in h.server_events(cid, "output_audio_buffer.stopped")]
    assert h.control.requests[0][0] >= stopped[-1]


async def test_max_duration_closing_line_then_hangup(harness: Harness) -> None:
    prof = profile(closing_seconds=1, closing_line="We are nearly out of time.")
    call = await harness.start_call(scenario([], on_end="stay"), prof, max_duration_seconds=2)
    summary = await harness.converse(call)
    cid = call["call_id"]
    start = parse_iso(call["accepted_at"]).timestamp()
    closing = [t for t, e in harness.timed_client_events(cid, "response.create")
               if "We are nearly out of time." in (e.get("response") or {}).get("instructions", "")]
    assert len(closing) == 1 and start + 0.9 <= closing[0] < start + 1.5
    hangup_at = harness.control.requests[0][0]
    assert harness.control.actions() == ["hangup"] and start + 1.95 <= hangup_at < start + 2.5
    assert summary["outcome"] == "timed_out"
    assert 1.9 <= summary["duration_seconds"] < 3.0


async def test_caller_hang_up_is_not_a_drop(harness: Harness) -> None:
    call = await harness.start_call(scenario([{"say": "hello"}, {"hangup": True}]))
    summary = await asyncio.wait_for(harness.converse(call), 5)
    assert summary["outcome"] == "caller_hung_up"
    assert "404" in summary["reason"]
    assert harness.control.requests == []  # no hangup for a call that is already gone


async def test_drop_then_reconnect_continues_without_greeting_again(harness: Harness) -> None:
    sc = scenario([{"say": "first question"}, {"drop_sideband": True}, {"wait": 0.3},
                   {"say": "second question"}],
                  rules=[{"match": "first", "say": "Answer one."}, {"match": "second", "say": "Answer two."}])
    call = await harness.start_call(sc)
    summary = await harness.converse(call)
    cid = call["call_id"]
    assert len(harness.server_events(cid, "session.created")) == 2  # a second sideband was opened
    assert harness.instructions(cid).count(greeting_instructions(GREETING)) == 1
    assert [t["text"] for t in summary["transcript"]] == [
        GREETING, "first question", "Answer one.", "second question", "Answer two."]
    assert summary["outcome"] == "caller_hung_up"


async def test_a_refer_that_goes_nowhere_gives_the_call_back_to_the_agent(emulator_factory) -> None:
    # The platform answers 200 to /refer even when no REFER reached the carrier (docs/platform.md §2.3). Here the
    # emulator never ends the call after the refer: the engine must not leave the caller in dead air.
    emu = await emulator_factory(speech_seconds_per_char=0.002, refer_end_delay_s=60)
    h = Harness(emu)
    try:
        sc = scenario([{"say": "sales please"}, {"wait": 2.5}],
                      rules=[{"match": "sales", "call": {"name": "transfer_call", "arguments": {"target": "sales"}}}],
                      default_reply="Sorry, the transfer failed. Can I help?")
        call = await h.start_call(sc)
        summary = await h.converse(call)
    finally:
        await h.aclose()
    cid = call["call_id"]
    assert h.control.actions() == ["refer"]
    notes = [e["item"]["content"][0]["text"] for e in h.client_events(cid, "conversation.item.create")
             if e["item"]["type"] == "message"]
    assert notes and "did not go through" in notes[0]
    assert summary["transcript"][-1]["text"] == "Sorry, the transfer failed. Can I help?"
    assert summary["outcome"] == "caller_hung_up" and summary["transfer_target"] is None


async def test_platform_session_limit_1001_is_timed_out(emulator_factory) -> None:
    emu = await emulator_factory(session_limit_s=1.0)
    h = Harness(emu)
    try:
        call = await h.start_call(scenario([], on_end="stay"))
        summary = await asyncio.wait_for(h.converse(call), 5)
    finally:
        await h.aclose()
    assert summary["outcome"] == "timed_out" and "1001" in summary["reason"]
    assert "maximum duration" in summary["reason"]
    assert h.control.requests == []  # the platform ended it; no reconnect storm, no hangup
    assert len(h.server_events(call["call_id"], "session.created")) == 1


async def test_the_time_limit_still_applies_when_a_transfer_pending_at_the_deadline_fails(emulator_factory) -> None:
    # The deadline falls while a transfer is waiting to settle; the refer goes nowhere and the call comes back to
    # the agent. The time limit must not have been lost: the engine hangs up (timed_out) instead of running on.
    emu = await emulator_factory(speech_seconds_per_char=0.002, refer_end_delay_s=60)
    h = Harness(emu)
    try:
        sc = scenario([{"say": "sales please"}, {"wait": 6}],
                      rules=[{"match": "sales", "call": {"name": "transfer_call", "arguments": {"target": "sales"}}}],
                      default_reply="Sorry, the transfer failed.")
        call = await h.start_call(sc, profile(closing_line=None), max_duration_seconds=1.5)
        summary = await asyncio.wait_for(h.converse(call), 10)
    finally:
        await h.aclose()
    start = parse_iso(call["accepted_at"]).timestamp()
    assert h.control.actions() == ["refer", "hangup"]
    refer_at, hangup_at = h.control.requests[0][0], h.control.requests[1][0]
    assert refer_at < start + 1.5 and hangup_at >= refer_at + h.options.transfer_settle_seconds - 0.1
    assert summary["outcome"] == "timed_out" and summary["transfer_target"] is None


async def test_keypad_digits_pressed_at_a_human_pace_are_one_message(harness: Harness) -> None:
    # Each digit comes within digit_batch_seconds (0.2 s here) of the previous one, the whole entry takes longer.
    sc = scenario([{"dtmf": "1"}, {"wait": 0.12}, {"dtmf": "2"}, {"wait": 0.12}, {"dtmf": "3"}, {"wait": 0.12},
                   {"dtmf": "#"}, {"wait": 0.5}])
    call = await harness.start_call(sc)
    summary = await harness.converse(call)
    messages = [e["item"]["content"][0]["text"]
                for e in harness.client_events(call["call_id"], "conversation.item.create")]
    assert messages == ["The caller pressed 123# on the keypad."]
    assert summary["digits"] == "123#"
