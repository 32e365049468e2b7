"""The sideband client and the engine's connection behaviour, against a tiny in-test WebSocket server.

The emulator answers session.created at once; a real service can take seconds. These tests hold it back to check
that the greeting does not wait for it, and script frames the emulator never sends (junk, errors).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Response

from shared.conversation import converse
from shared.sideband import CallGone, Sideband, SidebandError, sideband_url
from shared.tools import ToolRegistry

from .helpers import FAST, profile


class Auth:
    async def headers(self) -> dict[str, str]:
        return {"api-key": "k"}


class NoCallControl:
    def __init__(self) -> None:
        self.requests: list[str] = []

    async def hangup(self, call_id: str) -> Any:
        self.requests.append("hangup")
        raise AssertionError("not expected")

    async def refer(self, call_id: str, target_uri: str) -> Any:
        self.requests.append("refer")
        raise AssertionError("not expected")


def test_sideband_url() -> None:
    assert sideband_url("https://res.openai.azure.com", "rtc_u1_ab/c") == \
        "wss://res.openai.azure.com/openai/v1/realtime?call_id=rtc_u1_ab%2Fc"
    assert sideband_url("http://127.0.0.1:8765/openai/v1/", "rtc_1") == \
        "ws://127.0.0.1:8765/openai/v1/realtime?call_id=rtc_1"
    with pytest.raises(ValueError):
        sideband_url("ftp://x", "rtc_1")


async def _server(handler, status: int | None = None):  # noqa: ANN202
    seen: dict[str, Any] = {}

    def process_request(conn: ServerConnection, request):  # noqa: ANN001, ANN202
        seen["path"] = request.path
        seen["headers"] = request.headers
        if status is not None:
            return Response(status, "X", Headers(), b"")
        return None

    server = await serve(handler, "127.0.0.1", 0, process_request=process_request)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}", seen


async def test_connect_sends_auth_and_no_beta_header_and_maps_404_to_call_gone() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(json.dumps({"type": "session.created"}))
        await ws.recv()

    server, url, seen = await _server(handler)
    async with server:
        sb = await Sideband.connect(url, "rtc_1", Auth())
        assert (await sb.recv())["type"] == "session.created"
        event_id = await sb.send({"type": "response.create"})
        assert event_id.startswith("evt_")
        with pytest.raises(ValueError):  # audio formats are negotiated by SIP; never touched
            await sb.update_session({"audio": {"output": {"format": {"type": "audio/pcmu"}}}})
        await sb.close()
    assert seen["path"] == "/openai/v1/realtime?call_id=rtc_1"
    assert seen["headers"]["api-key"] == "k" and "OpenAI-Beta" not in seen["headers"]

    for status, exc in ((404, CallGone), (500, SidebandError)):
        server, url, _ = await _server(handler, status=status)
        async with server:
            with pytest.raises(exc) as info:
                await Sideband.connect(url, "rtc_1", Auth())
        assert info.value.status == status
        assert (exc is CallGone) == isinstance(info.value, CallGone)


async def test_greeting_goes_out_before_session_created_and_junk_and_errors_are_survived() -> None:
    got: list[tuple[float, dict]] = []
    connected_at: list[float] = []

    async def handler(ws: ServerConnection) -> None:
        connected_at.append(time.monotonic())

        async def read() -> None:
            async for raw in ws:
                got.append((time.monotonic(), json.loads(raw)))

        reader = asyncio.create_task(read())
        await asyncio.sleep(0.5)  # a slow session.created
        await ws.send(json.dumps({"type": "session.created", "event_id": "e1", "session": {}}))
        await ws.send("not json")
        await ws.send(json.dumps({"type": "error", "event_id": "e2",
                                  "error": {"type": "invalid_request_error", "message": "boom"}}))
        await ws.send(json.dumps({"type": "response.output_audio_transcript.done", "transcript": "Hello there"}))
        await asyncio.sleep(0.1)
        await ws.close(1000)  # e.g. an operator hung up through the REST API
        reader.cancel()

    server, url, _ = await _server(handler)
    control = NoCallControl()
    async with server:
        call = {"call_id": "rtc_2", "accepted_at": "2026-11-25T12:00:00.000000Z", "profile": profile(),
                "max_duration_seconds": None}
        summary = await converse(call, endpoint=url, auth=Auth(), call_control=control, tools=ToolRegistry(),
                                 turns=None, options=FAST)
    assert got[0][1]["type"] == "response.create"
    assert got[0][0] - connected_at[0] < 0.3  # did not wait the 0.5 s for session.created
    assert summary["outcome"] == "completed" and "1000" in summary["reason"]
    assert [t["text"] for t in summary["transcript"]] == ["Hello there"]  # the error and junk were survived
    assert control.requests == []


async def test_call_gone_at_connect_is_a_hang_up_without_a_greeting() -> None:
    async def handler(ws: ServerConnection) -> None:  # never reached
        raise AssertionError

    server, url, _ = await _server(handler, status=404)
    async with server:
        call = {"call_id": "rtc_3", "accepted_at": "2026-11-25T12:00:00.000000Z", "profile": profile()}
        summary = await converse(call, endpoint=url, auth=Auth(), call_control=NoCallControl(),
                                 tools=ToolRegistry(), turns=None, options=FAST)
    assert summary["outcome"] == "caller_hung_up" and "404" in summary["reason"]
    assert summary["transcript"] == []


async def test_unreachable_service_is_retried_then_raised() -> None:
    # Nothing listens on this port: every attempt of the bounded backoff fails, then converse raises so the
    # orchestrator's retry policy (and in the end its hang-up backstop) takes over.
    server, url, _ = await _server(lambda ws: None)
    server.close()
    await server.wait_closed()
    call = {"call_id": "rtc_4", "accepted_at": "2026-11-25T12:00:00.000000Z", "profile": profile()}
    started = time.monotonic()
    with pytest.raises(SidebandError):
        await converse(call, endpoint=url, auth=Auth(), call_control=NoCallControl(), tools=ToolRegistry(),
                       turns=None, options=FAST)
    assert time.monotonic() - started >= sum(FAST.reconnect_delays) * 0.9


class RecordingHangup:
    def __init__(self) -> None:
        self.at: list[float] = []
        self.on_hangup = asyncio.Event()

    async def hangup(self, call_id: str) -> Any:
        self.at.append(time.monotonic())
        self.on_hangup.set()
        return type("Result", (), {"gone": False})()

    async def refer(self, call_id: str, target_uri: str) -> Any:
        raise AssertionError("not expected")


async def test_the_silence_goodbye_plays_in_full_even_when_the_services_own_answer_was_already_speaking() -> None:
    # Server VAD answers the second timeout by itself, and its audio has started before the engine reacts. The
    # engine cancels that answer (its audio is cleared) and must then wait for *its* goodbye to play, not hang up
    # as soon as the cancelled answer falls silent.
    goodbye_stopped: list[float] = []
    control = RecordingHangup()

    async def handler(ws: ServerConnection) -> None:
        async def send(*events: dict) -> None:
            for e in events:
                await ws.send(json.dumps(e))

        n = 0
        auto_active = False

        async def respond(rid: str, speech: float, metadata: dict | None) -> None:
            if speech:
                await asyncio.sleep(0.2)  # the model's latency before a response starts
            # Like the GA service, the response echoes the metadata of the response.create it answers.
            await send({"type": "response.created", "response": {"id": rid, "metadata": metadata}})
            if speech:
                await send({"type": "output_audio_buffer.started", "response_id": rid})
            await send({"type": "response.output_audio_transcript.done", "transcript": f"line {rid}"},
                       {"type": "response.done", "response": {"id": rid, "output": []}})
            if speech:
                await asyncio.sleep(speech)
                await send({"type": "output_audio_buffer.stopped", "response_id": rid})
                goodbye_stopped.append(time.monotonic())

        await send({"type": "session.created", "session": {}},
                   {"type": "input_audio_buffer.timeout_triggered"})
        async for raw in ws:
            event = json.loads(raw)
            if event["type"] == "response.cancel":
                if auto_active:
                    auto_active = False
                    await send({"type": "response.done", "response": {"id": "resp_auto", "status": "cancelled"}},
                               {"type": "output_audio_buffer.cleared", "response_id": "resp_auto"})
                else:
                    await send({"type": "error", "error": {"code": "response_cancel_not_active",
                                                           "event_id": event["event_id"]}})
            elif event["type"] == "response.create" and auto_active:
                await send({"type": "error", "error": {"code": "conversation_already_has_active_response",
                                                       "event_id": event["event_id"]}})
            elif event["type"] == "response.create":
                n += 1
                metadata = (event.get("response") or {}).get("metadata")
                if n == 1:  # the prompt; then the caller stays silent again
                    await respond("resp_prompt", 0, metadata)
                    await send({"type": "input_audio_buffer.timeout_triggered"},
                               {"type": "response.created", "response": {"id": "resp_auto", "metadata": None}},
                               {"type": "output_audio_buffer.started", "response_id": "resp_auto"})
                    auto_active = True
                else:
                    await respond("resp_bye", 0.5, metadata)
            if control.on_hangup.is_set():
                break
        await control.on_hangup.wait()
        await ws.close(1000)

    server, url, _ = await _server(handler)
    async with server:
        call = {"call_id": "rtc_5", "accepted_at": "2026-11-25T12:00:00.000000Z",
                "profile": profile(greeting=""), "max_duration_seconds": None}
        summary = await asyncio.wait_for(
            converse(call, endpoint=url, auth=Auth(), call_control=control, tools=ToolRegistry(), turns=None,
                     options=FAST), 10)
    assert summary["outcome"] == "idle"
    assert goodbye_stopped and control.at and control.at[0] >= goodbye_stopped[0]
