"""Sideband WebSocket: opening rules, client events, scripted turns, endings, fan-out."""

from __future__ import annotations

import json

import pytest
import websockets

from .helpers import ACCEPT_BODY, STRICT_SERVER, accept, connect, drain, post, recv_until

P = "/openai/v1/realtime/calls"


async def test_upgrade_404_for_unknown_and_unaccepted(emulator):
    for call_id in ("rtc_u1_nope", await emulator.place_call()):
        with pytest.raises(websockets.InvalidStatus) as exc:
            await connect(emulator, call_id)
        assert exc.value.response.status_code == 404


async def test_upgrade_needs_auth_and_accepts_query_key(emulator):
    call_id = await emulator.place_call()
    await accept(emulator, call_id)
    with pytest.raises(websockets.InvalidStatus) as exc:
        await connect(emulator, call_id, headers={"api-key": "wrong"})
    assert exc.value.response.status_code == 401
    ws = await websockets.connect(f"ws://127.0.0.1:{emulator.http_port}/openai/v1/realtime?call_id={call_id}&api-key=test-key")
    assert json.loads(await ws.recv())["type"] == "session.created"
    await ws.close()


async def test_beta_header_is_refused(emulator):
    call_id = await emulator.place_call()
    await accept(emulator, call_id)
    with pytest.raises(websockets.InvalidStatus) as exc:
        await connect(emulator, call_id, headers={"api-key": "test-key", "OpenAI-Beta": "realtime=v1"})
    assert exc.value.response.status_code == 400


async def test_session_created_reflects_accept_and_update(emulator):
    call_id = await emulator.place_call()
    await accept(emulator, call_id)
    ws = await connect(emulator, call_id)
    created = json.loads(await ws.recv())
    assert created["type"] == "session.created"
    s = created["session"]
    assert s["model"] == "gpt-realtime" and s["instructions"] == ACCEPT_BODY["instructions"]
    assert s["audio"]["output"]["voice"] == "marin" and [t["name"] for t in s["tools"]] == ["lookup_order", "end_call"]
    assert s["audio"]["input"]["turn_detection"]["idle_timeout_ms"] == 8000
    await ws.send(json.dumps({"type": "session.update", "event_id": "c1", "session": {"instructions": "x"}}))
    err = await recv_until(ws, "error")
    assert err["error"]["message"] == "Missing required parameter: 'session.type'." and err["error"]["event_id"] == "c1"
    await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", "instructions": "Be brief."}}))
    upd = await recv_until(ws, "session.updated")
    assert upd["session"]["instructions"] == "Be brief." and upd["session"]["audio"]["output"]["voice"] == "marin"
    await ws.close()


async def test_quoted_instructions_are_said_verbatim_with_full_sequence(emulator):
    call_id = await emulator.place_call()
    await accept(emulator, call_id)
    ws = await connect(emulator, call_id)
    events: list = []
    await ws.send(
        json.dumps(
            {"type": "response.create", "response": {"instructions": "Say: 'Thank you for calling, how can I help?'"}}
        )
    )
    await recv_until(ws, "output_audio_buffer.stopped", into=events)
    types = [e["type"] for e in events]
    assert types[:3] == ["session.created", "response.created", "rate_limits.updated"]
    order = ["response.output_item.added", "response.content_part.added", "output_audio_buffer.started",
             "response.output_audio_transcript.delta", "response.output_audio_transcript.done",
             "response.content_part.done", "response.output_item.done", "response.done", "output_audio_buffer.stopped"]
    assert [
        t
        for t in types
        if t in order and (t != "response.output_audio_transcript.delta" or types.index(t) == types.index(t))
    ] and [types.index(t) for t in order] == sorted(types.index(t) for t in order)
    done = next(e for e in events if e["type"] == "response.output_audio_transcript.done")
    assert done["transcript"] == "Thank you for calling, how can I help?"
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta")
    assert deltas == done["transcript"]
    rdone = next(e for e in events if e["type"] == "response.done")
    assert rdone["response"]["status"] == "completed" and rdone["response"]["usage"]["total_tokens"] > 0
    assert "first_response_create" in emulator.calls[call_id].timestamps
    await ws.close()


async def test_rules_function_call_and_after_function(emulator):
    scenario = {
        "script": {"steps": [{"say": "Where is order 77?"}]},
        "model": {
            "greeting": "Hello!",
            "rules": [
                {
                    "match": r"order (?P<id>\d+)",
                    "regex": True,
                    "call": {"name": "lookup_order", "arguments": {"order_id": "{id}"}},
                }
            ],
            "after_function": {"lookup_order": "Order is {status} ({output})"},
        },
    }
    call_id = await emulator.place_call(scenario)
    await accept(emulator, call_id)
    ws = await connect(emulator, call_id)
    events: list = []
    await ws.send(json.dumps({"type": "response.create"}))
    greet = await recv_until(ws, "response.output_audio_transcript.done", into=events)
    assert greet["transcript"] == "Hello!"
    transcript = await recv_until(ws, "conversation.item.input_audio_transcription.completed", into=events)
    assert transcript["transcript"] == "Where is order 77?"
    fc = await recv_until(ws, "response.function_call_arguments.done", into=events)
    assert fc["name"] == "lookup_order" and json.loads(fc["arguments"]) == {"order_id": "77"}
    done = await recv_until(ws, "response.done", into=events)
    assert (
        done["response"]["output"][0]["type"] == "function_call"
        and done["response"]["output"][0]["call_id"] == fc["call_id"]
    )
    output = json.dumps({"status": "shipped"})
    await ws.send(json.dumps({"type": "conversation.item.create",
                              "item": {"type": "function_call_output", "call_id": fc["call_id"], "output": output}}))
    await ws.send(json.dumps({"type": "response.create"}))
    said = await recv_until(ws, "response.output_audio_transcript.done", into=events)
    assert said["transcript"] == f"Order is shipped ({output})"
    await ws.close()


async def test_rule_for_undeclared_tool_is_not_called(emulator):
    scenario = {"script": {"steps": [{"say": "bye"}]},
                "model": {"rules": [{"match": "bye", "say": "Goodbye!", "call": {"name": "not_a_tool"}}]}}
    call_id = await emulator.place_call(scenario)
    await accept(emulator, call_id)
    ws = await connect(emulator, call_id)
    events: list = []
    await ws.send(json.dumps({"type": "response.create", "response": {"instructions": "Say 'hi'"}}))
    await recv_until(ws, "response.done", into=events)
    done = await recv_until(ws, "response.done", into=events)
    assert [o["type"] for o in done["response"]["output"]] == ["message"]
    await ws.close()


async def test_dtmf_silence_and_cancel(emulator_factory):
    # The idle prompt must still be generating when the test's response.cancel arrives: 12 chars at 0.25 s/char
    # take 0.75 s to generate (it was 30 ms, a race on a loaded machine). The cancel cuts it short.
    emu = await emulator_factory(speech_seconds_per_char=0.25)
    scenario = {"script": {"wait_for_greeting": False, "steps": [{"dtmf": "4#"}, {"silence": True}]},
                "model": {"on_idle": "Still there?"}}
    call_id = await emu.place_call(scenario)
    await accept(emu, call_id)
    ws = await connect(emu, call_id)
    events: list = []
    d1 = await recv_until(ws, "input_audio_buffer.dtmf_event_received", into=events)
    d2 = await recv_until(ws, "input_audio_buffer.dtmf_event_received", into=events)
    assert (d1["event"], d2["event"]) == ("4", "#") and "event_id" not in d1 and isinstance(d1["received_at"], int)
    to = await recv_until(ws, "input_audio_buffer.timeout_triggered", into=events)
    assert to["audio_end_ms"] - to["audio_start_ms"] == 8000
    await recv_until(ws, "response.created", into=events)
    await ws.send(json.dumps({"type": "response.cancel"}))
    done = await recv_until(ws, "response.done", into=events)
    assert (
        done["response"]["status"] == "cancelled" and done["response"]["status_details"]["reason"] == "client_cancelled"
    )
    await recv_until(ws, "output_audio_buffer.cleared", into=events)
    await ws.send(json.dumps({"type": "response.cancel"}))
    err = await recv_until(ws, "error", into=events)
    assert err["error"]["code"] == "response_cancel_not_active"
    await ws.close()


async def test_second_response_while_active_is_an_error(emulator_factory):
    # 0.1 s/char: the first response generates for ~0.8 s, well past the second response.create.
    emu = await emulator_factory(speech_seconds_per_char=0.1)
    call_id = await emu.place_call()
    await accept(emu, call_id)
    ws = await connect(emu, call_id)
    await ws.send(
        json.dumps({"type": "response.create", "response": {"instructions": "Say 'a fairly long sentence to speak'"}})
    )
    await ws.send(json.dumps({"type": "response.create"}))
    err = await recv_until(ws, "error")
    assert err["error"]["code"] == "conversation_already_has_active_response"
    await ws.close()


async def test_caller_hangup_drops_without_close_frame(emulator):
    call_id = await emulator.place_call()
    await accept(emulator, call_id)
    ws1, ws2 = await connect(emulator, call_id), await connect(emulator, call_id)
    await ws1.recv(), await ws2.recv()
    status, _ = await post(emulator, f"/_emulator/calls/{call_id}/hangup", {}, headers={})
    assert status == 200
    for ws in (ws1, ws2):
        exc = await drain(ws, [])
        assert isinstance(exc, websockets.ConnectionClosedError) and exc.rcvd is None  # 1006: no close frame
    assert emulator.calls[call_id].state == "ended" and emulator.calls[call_id].ended_reason == "caller_hangup"
    with pytest.raises(websockets.InvalidStatus):
        await connect(emulator, call_id)


async def test_hangup_closes_with_frame_and_fans_out(emulator):
    call_id = await emulator.place_call()
    await accept(emulator, call_id)
    ws1, ws2 = await connect(emulator, call_id), await connect(emulator, call_id)
    await ws1.recv(), await ws2.recv()
    await ws1.send(json.dumps({"type": "response.create", "response": {"instructions": "Say 'both hear this'"}}))
    for ws in (ws1, ws2):
        assert (await recv_until(ws, "response.output_audio_transcript.done"))["transcript"] == "both hear this"
    assert await post(emulator, f"{P}/{call_id}/hangup") == (200, b"")
    for ws in (ws1, ws2):
        exc = await drain(ws, [])
        assert ws.close_code == 1000 and (exc is None or exc.rcvd is not None)


async def test_session_limit_closes_1001(emulator_factory):
    emu = await emulator_factory(session_limit_s=0.3)
    call_id = await emu.place_call()
    await accept(emu, call_id)
    ws = await connect(emu, call_id)
    await drain(ws, [], timeout=3)
    assert ws.close_code == 1001 and ws.close_reason == "Your session hit the maximum duration of 0.3 seconds."
    assert emu.calls[call_id].ended_reason == "session_limit"


def test_session_limit_reason_text():
    from emulator.config import EmulatorConfig
    from emulator.server import session_limit_reason

    assert EmulatorConfig(mode="azure").effective_session_limit_s() == 1800
    assert EmulatorConfig(mode="openai").effective_session_limit_s() == 3600
    assert session_limit_reason(1800) == "Your session hit the maximum duration of 30 minutes."
    assert session_limit_reason(3600) == "Your session hit the maximum duration of 60 minutes."


async def test_drop_sideband_fault_keeps_call_and_allows_reconnect(emulator):
    call_id = await emulator.place_call({"faults": {"drop_sideband_after_s": 0.2}})
    await accept(emulator, call_id)
    ws = await connect(emulator, call_id)
    exc = await drain(ws, [], timeout=3)
    assert isinstance(exc, websockets.ConnectionClosedError) and exc.rcvd is None
    assert emulator.calls[call_id].state == "accepted"
    ws2 = await connect(emulator, call_id)
    assert json.loads(await ws2.recv())["type"] == "session.created"
    await ws2.close()


async def test_scripted_goodbye_then_end_call_and_script_hangup(emulator):
    scenario = {"script": {"steps": [{"say": "ok goodbye"}], "on_end": "hangup"},
                "model": {"rules": [{"match": "goodbye", "say": "Bye!", "call": {"name": "end_call"}}]}}
    call_id = await emulator.place_call(scenario)
    await accept(emulator, call_id)
    ws = await connect(emulator, call_id)
    await ws.send(json.dumps({"type": "response.create", "response": {"instructions": "Say 'Hi'"}}))
    events: list = []
    await recv_until(ws, "response.done", into=events)
    done = await recv_until(ws, "response.done", into=events)
    assert [o["type"] for o in done["response"]["output"]] == ["message", "function_call"]
    assert done["response"]["output"][0]["content"][0]["transcript"] == "Bye!"
    # The controller answers the end_call by hanging up.
    assert await post(emulator, f"{P}/{call_id}/hangup") == (200, b"")
    await emulator.wait_for_state(call_id, "ended", 2)
    assert emulator.calls[call_id].ended_reason == "hangup"


async def test_script_hangup_step(emulator):
    call_id = await emulator.place_call(
        {"script": {"wait_for_greeting": False, "steps": [{"wait": 0.05}, {"hangup": True}]}}
    )
    await accept(emulator, call_id)
    ws = await connect(emulator, call_id)
    exc = await drain(ws, [], timeout=3)
    assert isinstance(exc, websockets.ConnectionClosedError) and exc.rcvd is None
    assert emulator.calls[call_id].ended_reason == "caller_hangup"


async def test_barge_in_cancels_with_turn_detected(emulator_factory):
    # The caller speaks 0.5 s after the sideband connects; the response.create must arrive before that (it used
    # to be 0.15 s) and the response then generates for ~0.65 s, so the caller always barges into it.
    emu = await emulator_factory(speech_seconds_per_char=0.05)
    scenario = {"script": {"wait_for_greeting": False,
                           "steps": [{"say": "wait", "wait_for": "nothing", "after": 0.5}]}}
    call_id = await emu.place_call(scenario)
    await accept(emu, call_id)
    ws = await connect(emu, call_id)
    await ws.send(
        json.dumps(
            {
                "type": "response.create",
                "response": {"instructions": "Say 'a long greeting that takes a while to say out loud'"},
            }
        )
    )
    events: list = []
    await recv_until(ws, "input_audio_buffer.speech_started", into=events)
    done = await recv_until(ws, "response.done", into=events)
    assert done["response"]["status"] == "cancelled" and done["response"]["status_details"]["reason"] == "turn_detected"
    await recv_until(ws, "output_audio_buffer.cleared", into=events)
    await ws.close()


async def test_text_only_response_completes_without_playback(emulator):
    # output_modalities ["text"]: output_text.* events, no audio playback markers, and the response finishes
    # (it used to crash on the playback bookkeeping and leave the response active forever).
    call_id = await emulator.place_call()
    await accept(emulator, call_id, {**ACCEPT_BODY, "output_modalities": ["text"]})
    ws = await connect(emulator, call_id)
    events: list = []
    await ws.send(json.dumps({"type": "response.create", "response": {"instructions": "Say 'text only'"}}))
    done = await recv_until(ws, "response.done", into=events)
    assert done["response"]["status"] == "completed"
    assert done["response"]["output"][0]["content"] == [{"type": "output_text", "text": "text only"}]
    types = [e["type"] for e in events]
    assert "response.output_text.done" in types and not any(t.startswith("output_audio_buffer.") for t in types)
    for ev in events:
        STRICT_SERVER.validate_python(ev)
    await ws.send(json.dumps({"type": "response.create", "response": {"instructions": "Say 'again'"}}))
    assert (await recv_until(ws, "response.done"))["response"]["status"] == "completed"
    await ws.close()
