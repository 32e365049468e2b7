"""Fidelity: every event and webhook the emulator sends validates against openai-python's own models,
openai-python's client works against it, and signatures verify with openai and standardwebhooks."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from standardwebhooks import Webhook

from .helpers import ACCEPT_BODY, KEY, STRICT_SERVER, WEBHOOK, Receiver, accept, connect, recv_until

BETA_NAMES = {
    "response.audio.delta",
    "response.audio_transcript.delta",
    "response.text.delta",
    "conversation.item.created",
    "response.audio_transcript.done",
    "response.audio.done",
    "response.text.done",
}


def _client(emu) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=emu.http_url + "/openai/v1", api_key=KEY, max_retries=0)


async def _demo_call_with_sdk(emu) -> str:
    """The demo scenario end to end, driven by openai-python as a controller would."""
    client = _client(emu)
    call_id = await emu.place_call("demo")
    await client.realtime.calls.accept(call_id, type="realtime", model="gpt-realtime",
                                       instructions="You are a concierge.", tools=ACCEPT_BODY["tools"],
                                       audio=ACCEPT_BODY["audio"])
    seen: list = []
    async with client.realtime.connect(call_id=call_id) as conn:
        await conn.send({"type": "response.create", "response": {"instructions": "Say: 'Thank you for calling.'"}})
        await conn.session.update(session={"type": "realtime", "instructions": "Be brief."})
        async for event in conn:
            seen.append(event.type)
            if event.type == "response.function_call_arguments.done":
                if event.name == "lookup_order":
                    await conn.conversation.item.create(
                        item={
                            "type": "function_call_output",
                            "call_id": event.call_id,
                            "output": json.dumps({"order_id": "1234", "status": "shipped", "eta": "Friday"}),
                        }
                    )
                    await conn.response.create()
                elif event.name == "end_call":
                    await client.realtime.calls.hangup(call_id)
    assert "session.created" in seen and "session.updated" in seen
    return call_id


async def test_every_emitted_event_validates_with_the_strict_type_adapter(emulator_factory):
    emu = await emulator_factory(speech_seconds_per_char=0.002)
    ids = [await _demo_call_with_sdk(emu)]
    call = emu.calls[ids[0]]
    assert call.state == "ended" and call.ended_reason == "hangup"
    says = [e["transcript"] for _, e in call.server_events if e["type"] == "response.output_audio_transcript.done"]
    assert says == ["Thank you for calling.", "Let me look up order 1234.", "Your order 1234 is shipped.",
                    "Thanks for calling. Goodbye!"]
    assert sum(1 for _, e in call.server_events if e["type"] == "input_audio_buffer.dtmf_event_received") == 1

    # More flows: errors, cancel, barge-in, idle timeout, text modality, item delete/retrieve.
    call_id = await emu.place_call({"script": {"wait_for_greeting": False, "steps": [
        {"silence": True}, {"say": "hello there", "wait_for": "nothing", "after": 0.01}]}})
    ids.append(call_id)
    await accept(emu, call_id)
    ws = await connect(emu, call_id)
    await ws.send(json.dumps({"type": "session.update", "session": {}}))
    await ws.send(json.dumps({"type": "response.cancel"}))
    await ws.send("not json")
    await ws.send(json.dumps({"type": "response.audio.delta"}))
    await ws.send(
        json.dumps(
            {
                "type": "conversation.item.create",
                "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            }
        )
    )
    added = await recv_until(ws, "conversation.item.added")
    await ws.send(json.dumps({"type": "conversation.item.retrieve", "item_id": added["item"]["id"]}))
    await ws.send(json.dumps({"type": "conversation.item.delete", "item_id": added["item"]["id"]}))
    await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
    await asyncio.sleep(0.2)
    await asyncio.wait_for(emu.calls[call_id].session.idle.wait(), 5)
    await ws.send(
        json.dumps(
            {"type": "response.create", "response": {"output_modalities": ["text"], "instructions": "Say 'text only'"}}
        )
    )
    await recv_until(ws, "response.output_text.done")
    await asyncio.sleep(0.3)
    await ws.close()
    await emu.caller_hangup(call_id)

    types: set[str] = set()
    for cid in ids:
        for _, event in emu.calls[cid].server_events:
            STRICT_SERVER.validate_python(event)  # raises with a precise location on any mismatch
            types.add(event["type"])
    assert not types & BETA_NAMES
    expected = {
        "session.created",
        "session.updated",
        "error",
        "rate_limits.updated",
        "response.created",
        "response.done",
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.done",
        "response.output_text.delta",
        "response.output_text.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.completed",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "input_audio_buffer.dtmf_event_received",
        "input_audio_buffer.timeout_triggered",
        "conversation.item.deleted",
        "conversation.item.retrieved",
        "input_audio_buffer.cleared",
    }
    assert expected <= types, expected - types


async def test_cancelled_flows_validate(emulator_factory):
    # 0.1 s/char: the response generates for ~0.8 s, so the cancel always finds it active (0.08 s was a race).
    emu = await emulator_factory(speech_seconds_per_char=0.1)
    call_id = await emu.place_call()
    await accept(emu, call_id)
    ws = await connect(emu, call_id)
    await ws.send(
        json.dumps({"type": "response.create", "response": {"instructions": "Say 'a long sentence to be cancelled'"}})
    )
    await recv_until(ws, "output_audio_buffer.started")
    await ws.send(json.dumps({"type": "response.cancel"}))
    await recv_until(ws, "output_audio_buffer.cleared")
    await ws.close()
    events = [STRICT_SERVER.validate_python(event) for _, event in emu.calls[call_id].server_events]
    done = [e for e in events if e.type == "response.done"]
    assert done and done[-1].response.status == "cancelled"


async def test_sdk_calls_reject_refer_and_404(emulator):
    client = _client(emulator)
    call_id = await emulator.place_call()
    assert await client.realtime.calls.reject(call_id, status_code=486) is None
    assert emulator.calls[call_id].reject_status == 486
    with pytest.raises(openai.NotFoundError) as exc:
        await client.realtime.calls.accept(call_id, type="realtime", model="gpt-realtime")
    assert exc.value.code == "call_id_not_found"
    call_id = await emulator.place_call()
    await client.realtime.calls.accept(call_id, type="realtime", model="gpt-realtime")
    assert await client.realtime.calls.refer(call_id, target_uri="sip:agent@example.com") is None
    await emulator.wait_for_state(call_id, "ended", 2)
    with pytest.raises(openai.AuthenticationError):
        await AsyncOpenAI(
            base_url=emulator.http_url + "/openai/v1", api_key="nope", max_retries=0
        ).realtime.calls.hangup(call_id)


async def test_sync_sdk_client_in_a_thread(emulator):
    call_id = await emulator.place_call()
    client = OpenAI(base_url=emulator.http_url + "/openai/v1", api_key=KEY, max_retries=0)
    await asyncio.to_thread(client.realtime.calls.accept, call_id, type="realtime", model="gpt-realtime")
    await asyncio.to_thread(client.realtime.calls.hangup, call_id)
    assert emulator.calls[call_id].ended_reason == "hangup"


async def test_sdk_connect_sees_1006_on_caller_hangup(emulator):
    import websockets

    client = _client(emulator)
    call_id = await emulator.place_call()
    await client.realtime.calls.accept(call_id, type="realtime", model="gpt-realtime")
    async with client.realtime.connect(call_id=call_id) as conn:
        assert (await conn.recv()).type == "session.created"
        await emulator.caller_hangup(call_id)
        with pytest.raises(websockets.ConnectionClosedError) as exc:
            await conn.recv()
        assert exc.value.rcvd is None


async def test_webhook_body_and_signature_verify_with_openai_and_standardwebhooks(emulator):
    rx = await Receiver().start()
    try:
        emulator.config.webhook_url = rx.url
        call_id = await emulator.place_call("demo")
        await rx.wait_count(1)
        headers, body = rx.requests[0]
        assert body == json.dumps(json.loads(body), separators=(",", ":")).encode()  # compact JSON
        event = WEBHOOK.validate_json(body)
        assert event.type == "realtime.call.incoming" and event.data.call_id == call_id
        names = [h.name for h in event.data.sip_headers]
        assert names[:3] == ["From", "To", "Call-ID"] and "X-Customer-Id" in names
        assert headers["user-agent"] == "OpenAI/1.0 (+https://platform.openai.com/docs/webhooks)"
        assert headers["webhook-id"].startswith("wh_") and headers["webhook-signature"].startswith("v1,")
        unwrapped = OpenAI(api_key="x").webhooks.unwrap(body, headers, secret=emulator.config.webhook_secret)
        assert unwrapped.type == "realtime.call.incoming" and unwrapped.data.call_id == call_id
        assert Webhook(emulator.config.webhook_secret).verify(body, headers)["data"]["call_id"] == call_id
    finally:
        await rx.stop()
