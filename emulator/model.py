"""The realtime session behind one accepted call: sideband fan-out, the scripted model, and the scripted caller.

Everything the emulator sends on a sideband goes through `RealtimeSession.emit`, which stamps an event_id,
records the event on the call and fans it out to every connected sideband (docs/platform.md §4.5).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .calls import ACCEPTED, Call
from .scenario import Rule, Step
from .util import event_id, hex_id, now

if TYPE_CHECKING:
    from .server import Emulator

log = logging.getLogger("emulator.model")

DEFAULT_TURN_DETECTION = {
    "type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 200,
    "idle_timeout_ms": None, "create_response": True, "interrupt_response": True,
}
FALLBACK_REPLY = "Hello, how can I help you?"


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of a session patch. turn_detection is replaced, not merged (its shape depends on its type)."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if key == "turn_detection":
            out[key] = None if value is None else {"create_response": True, "interrupt_response": True, **value}
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def build_session(accept_body: dict[str, Any], limit_s: float) -> dict[str, Any]:
    base = {
        "type": "realtime", "object": "realtime.session", "id": hex_id("sess_", 12),
        "model": accept_body.get("model", ""), "output_modalities": ["audio"], "instructions": "",
        "tools": [], "tool_choice": "auto", "max_output_tokens": "inf", "tracing": None, "prompt": None,
        "truncation": "auto", "expires_at": int(time.time() + limit_s), "include": None,
        "audio": {
            # SIP calls negotiate G.711 in SDP; the emulator's SDP answer is PCMU (docs/platform.md §2.2).
            "input": {"format": {"type": "audio/pcmu"}, "transcription": None, "noise_reduction": None,
                      "turn_detection": dict(DEFAULT_TURN_DETECTION)},
            "output": {"format": {"type": "audio/pcmu"}, "voice": "alloy", "speed": 1.0},
        },
    }
    return _merge(base, {k: v for k, v in accept_body.items() if k != "type"})


_DQUOTE = re.compile(r"[\"“](.+?)[\"”]", re.S)
# Single quotes only count when they open after a boundary and close before one, so apostrophes
# ("don't", "caller's") are not mistaken for quotes.
_SQUOTE = re.compile(r"(?:^|(?<=[\s:(]))[‘'](.+?)[’'](?=$|[\s.,;:!?)])", re.S)


def quoted_text(instructions: str | None) -> str | None:
    if not instructions:
        return None
    m = _DQUOTE.search(instructions) or _SQUOTE.search(instructions)
    return m.group(1).strip() if m else None


class _Fmt(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render(template: str, values: dict[str, Any]) -> str:
    try:
        return template.format_map(_Fmt(values))
    except (ValueError, IndexError, AttributeError):
        return template


@dataclass
class Sideband:
    ws: web.WebSocketResponse
    request: web.Request
    n: int


@dataclass
class Output:
    kind: str  # "say" | "call"
    text: str = ""
    name: str = ""
    arguments: str = "{}"
    server: str = ""  # kind "mcp": the server_label


@dataclass
class Active:
    response_id: str
    task: asyncio.Task | None = None
    output: list[dict[str, Any]] = field(default_factory=list)
    audio_started: bool = False
    chars: int = 0


class RealtimeSession:
    def __init__(self, emu: Emulator, call: Call) -> None:
        self.emu = emu
        self.call = call
        self.cfg = emu.config
        self.session = build_session(call.accept_body or {}, self.cfg.effective_session_limit_s())
        self.sidebands: list[Sideband] = []
        self._n = 0
        self.conversation_id = hex_id("conv_", 12)
        self.last_item_id: str | None = None
        self.items: dict[str, dict[str, Any]] = {}
        self.active: Active | None = None
        self.playback: asyncio.Task | None = None
        self.playback_response_id: str | None = None
        # Monotonic time at which the queued speech has finished playing (pushed forward as text is generated).
        self._playback_end = time.monotonic()
        self.pending_calls: dict[str, str] = {}  # function call_id -> name, awaiting function_call_output
        self.pending_output: tuple[str, str] | None = None  # (function name, output) to answer
        self.pending_user_text: str | None = None
        # MCP (emulator/mcp_platform.py): the tools listed per server label (None: listing failed), set once the
        # listing that starts with the first sideband is over, and approval requests awaiting an answer.
        self.mcp_tools: dict[str, list[dict[str, Any]] | None] = {}
        self.mcp_listed = asyncio.Event()
        self.mcp_list_task: asyncio.Task | None = None
        self.mcp_approvals: dict[str, asyncio.Future[bool]] = {}
        self.responses_done = 0
        self.first_response_done = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.t0 = time.monotonic()
        self.script_task: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self.closed = False

    # ------------------------------------------------------------------ fan-out
    def _ms(self) -> int:
        return int((time.monotonic() - self.t0) * 1000)

    def _stamp(self, event: dict[str, Any]) -> dict[str, Any]:
        # The DTMF event has no event_id in the schema (docs/platform.md §4.6).
        if "event_id" not in event and event["type"] != "input_audio_buffer.dtmf_event_received":
            event = {"type": event["type"], "event_id": event_id(), **{k: v for k, v in event.items() if k != "type"}}
        return event

    async def emit(self, event: dict[str, Any]) -> dict[str, Any]:
        event = self._stamp(event)
        self.call.server_events.append((now(), event))
        data = json.dumps(event, separators=(",", ":"))
        async with self._lock:
            for sb in list(self.sidebands):
                if sb.ws.closed:
                    continue
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await sb.ws.send_str(data)
        return event

    async def send_to(self, sb: Sideband, event: dict[str, Any]) -> None:
        event = self._stamp(event)
        self.call.server_events.append((now(), event))
        with contextlib.suppress(ConnectionError, RuntimeError):
            await sb.ws.send_str(json.dumps(event, separators=(",", ":")))

    async def error(self, sb: Sideband | None, message: str, code: str | None = None,
                    param: str | None = None, client_event_id: str | None = None) -> None:
        ev = {"type": "error", "error": {"type": "invalid_request_error", "code": code, "message": message,
                                         "param": param, "event_id": client_event_id}}
        if sb is None:
            await self.emit(ev)
        else:
            await self.send_to(sb, ev)

    def _update_idle(self) -> None:
        busy = self.active is not None or self.playback is not None or bool(self.pending_calls)
        if busy:
            self.idle.clear()
        else:
            self.idle.set()

    # ------------------------------------------------------------------ sidebands
    async def attach(self, ws: web.WebSocketResponse, request: web.Request) -> Sideband:
        self._n += 1
        sb = Sideband(ws, request, self._n)
        self.sidebands.append(sb)
        await self.send_to(sb, {"type": "session.created", "session": self.session})
        log.info("call %s sideband #%d connected (%d open)", self.call.call_id, sb.n, len(self.sidebands))
        if self.mcp_list_task is None:
            self.mcp_list_task = self.call.spawn(self._list_mcp_tools(), "mcp-list-tools")
        if self.script_task is None:
            self.script_task = self.call.spawn(self.run_script(), "caller-script")
            drop = self.call.scenario.faults.drop_sideband_after_s
            if drop is not None:
                self.call.spawn(self._drop_later(drop), "drop-sideband")
        return sb

    def detach(self, sb: Sideband) -> None:
        if sb in self.sidebands:
            self.sidebands.remove(sb)
            log.info("call %s sideband #%d closed (%d open)", self.call.call_id, sb.n, len(self.sidebands))

    def abort_sidebands(self) -> None:
        """Drop the TCP connections without a close frame: clients see 1006 (caller hang-up, docs/platform.md §4.4)."""
        for sb in list(self.sidebands):
            transport = sb.request.transport
            if transport is not None:
                transport.abort()
            self.detach(sb)

    async def close_sidebands(self, code: int, reason: str) -> None:
        for sb in list(self.sidebands):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await sb.ws.close(code=code, message=reason.encode()[:123])
            self.detach(sb)

    async def _drop_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        log.info("call %s fault: dropping sidebands", self.call.call_id)
        self.abort_sidebands()

    def shutdown(self) -> None:
        """Stop everything this session runs (the call ended)."""
        self.closed = True
        for task in (self.script_task, self.playback, self.active.task if self.active else None):
            if task is not None and task is not asyncio.current_task():
                task.cancel()

    # ------------------------------------------------------------------ client events
    async def handle(self, sb: Sideband, raw: str) -> None:
        try:
            event = json.loads(raw)
            if not isinstance(event, dict):
                raise ValueError("not an object")
        except ValueError:
            self.call.client_events.append((now(), {"_invalid": raw[:1000]}))
            await self.error(sb, "Invalid JSON in client event.", code="invalid_json")
            return
        self.call.client_events.append((now(), event))
        etype = event.get("type")
        ceid = event.get("event_id")
        if etype == "session.update":
            await self._session_update(sb, event)
        elif etype == "response.create":
            self.call.mark("first_response_create")
            await self.create_response(event.get("response") or {}, sb=sb, client_event_id=ceid)
        elif etype == "response.cancel":
            if self.active is None:
                await self.error(sb, "Cancellation failed: no active response found", code="response_cancel_not_active",
                                 client_event_id=ceid)
            else:
                await self.cancel_response("client_cancelled")
        elif etype == "conversation.item.create":
            await self._item_create(sb, event)
        elif etype == "conversation.item.delete":
            item_id = event.get("item_id")
            if item_id in self.items:
                del self.items[item_id]
                await self.emit({"type": "conversation.item.deleted", "item_id": item_id})
            else:
                await self.error(sb, f"Item with item_id not found: {item_id}", code="item_not_found",
                                 param="item_id", client_event_id=ceid)
        elif etype == "conversation.item.retrieve":
            item_id = event.get("item_id")
            if item_id in self.items:
                await self.send_to(sb, {"type": "conversation.item.retrieved", "item": self.items[item_id]})
            else:
                await self.error(sb, f"Item with item_id not found: {item_id}", code="item_not_found",
                                 param="item_id", client_event_id=ceid)
        elif etype == "output_audio_buffer.clear":
            await self._clear_playback()
        elif etype == "input_audio_buffer.clear":
            await self.emit({"type": "input_audio_buffer.cleared"})
        elif etype in ("input_audio_buffer.append", "input_audio_buffer.commit", "conversation.item.truncate"):
            # Audio travels over RTP on a SIP call; accepted and ignored.
            pass
        else:
            await self.error(sb, f"Invalid value: '{etype}'. Supported values are GA realtime client events.",
                             code="invalid_value", param="type", client_event_id=ceid)

    async def _session_update(self, sb: Sideband, event: dict[str, Any]) -> None:
        patch = event.get("session")
        if not isinstance(patch, dict) or "type" not in patch:
            await self.error(sb, "Missing required parameter: 'session.type'.", code="missing_required_parameter",
                             param="session.type", client_event_id=event.get("event_id"))
            return
        if patch["type"] != "realtime":
            await self.error(sb, f"Invalid value: '{patch['type']}'. Supported values are: 'realtime'.",
                             code="invalid_value", param="session.type", client_event_id=event.get("event_id"))
            return
        patch = {k: v for k, v in patch.items() if k not in ("type", "model")}
        self.session = _merge(self.session, patch)
        await self.emit({"type": "session.updated", "session": self.session})

    async def _item_create(self, sb: Sideband, event: dict[str, Any]) -> None:
        item = dict(event.get("item") or {})
        itype = item.get("type")
        if itype not in ("message", "function_call", "function_call_output", "mcp_approval_response"):
            await self.error(sb, f"Invalid value: '{itype}'.", code="invalid_value", param="item.type",
                             client_event_id=event.get("event_id"))
            return
        item.setdefault("id", hex_id("item_", 12))
        item.setdefault("object", "realtime.item")
        item.setdefault("status", "completed")
        if itype == "mcp_approval_response":
            waiter = self.mcp_approvals.pop(str(item.get("approval_request_id")), None)
            if waiter is None:
                await self.error(sb, "Unknown approval_request_id.", code="invalid_value",
                                 param="item.approval_request_id", client_event_id=event.get("event_id"))
                return
            if not waiter.done():
                waiter.set_result(item.get("approve") is True)
        if itype == "function_call_output":
            name = self.pending_calls.pop(item.get("call_id", ""), None) or self._function_name(item.get("call_id"))
            self.pending_output = (name or "", str(item.get("output", "")))
        elif itype == "message" and item.get("role") == "user":
            texts = [
                c.get("text") or c.get("transcript") or "" for c in item.get("content") or [] if isinstance(c, dict)
            ]
            self.pending_user_text = " ".join(t for t in texts if t) or self.pending_user_text
        prev = self.last_item_id
        self.items[item["id"]] = item
        self.last_item_id = item["id"]
        await self.emit({"type": "conversation.item.added", "previous_item_id": prev, "item": item})
        await self.emit({"type": "conversation.item.done", "previous_item_id": prev, "item": item})
        self._update_idle()

    def _function_name(self, call_id: Any) -> str | None:
        for item in self.items.values():
            if item.get("type") == "function_call" and item.get("call_id") == call_id:
                return item.get("name")
        return None

    # ------------------------------------------------------------------ the scripted model
    def _tool_names(self, params: dict[str, Any]) -> set[str]:
        tools = params.get("tools", self.session.get("tools")) or []
        return {t["name"] for t in tools
                if isinstance(t, dict) and t.get("type", "function") == "function" and isinstance(t.get("name"), str)}

    def _rule_outputs(self, rule: Rule, text: str, params: dict[str, Any]) -> list[Output]:
        groups: dict[str, Any] = {}
        if rule.regex:
            m = re.search(rule.match, text, re.I)
            groups = m.groupdict() if m else {}
        outs: list[Output] = []
        if rule.say:
            outs.append(Output("say", text=render(rule.say, groups)))
        if rule.mcp:
            args = {k: render(v, groups) if isinstance(v, str) else v for k, v in rule.mcp.arguments.items()}
            outs.append(Output("mcp", name=rule.mcp.tool, server=rule.mcp.server,
                               arguments=json.dumps(args, separators=(",", ":"))))
        if rule.call:
            tool_choice = params.get("tool_choice", self.session.get("tool_choice"))
            if rule.call.name in self._tool_names(params) and tool_choice != "none":
                args = {k: render(v, groups) if isinstance(v, str) else v for k, v in rule.call.arguments.items()}
                outs.append(Output("call", name=rule.call.name, arguments=json.dumps(args, separators=(",", ":"))))
            else:
                # A real model cannot call a tool the session does not declare; say so in the log.
                log.info(
                    "call %s model: rule wants %s but the session does not offer it", self.call.call_id, rule.call.name
                )
        return outs

    def plan(self, params: dict[str, Any]) -> list[Output]:
        """Decide what the model says or calls for one response (semantics in docs/emulator.md)."""
        script = self.call.scenario.model
        instructions = params.get("instructions")
        q = quoted_text(instructions)
        if q:
            self.pending_user_text = None
            return [Output("say", text=q)]
        if self.pending_output is not None:
            name, output = self.pending_output
            self.pending_output = None
            template = script.after_function.get(name)
            if template is None:
                return [Output("say", text=script.default_reply or "Done.")]
            values: dict[str, Any] = {"output": output, "name": name}
            try:
                parsed = json.loads(output)
                if isinstance(parsed, dict):
                    values.update({k: v for k, v in parsed.items() if k not in values})
            except ValueError:
                pass
            return [Output("say", text=render(template, values))]
        if self.pending_user_text is not None:
            text = self.pending_user_text
            self.pending_user_text = None
            for rule in script.rules:
                hit = re.search(rule.match, text, re.I) if rule.regex else rule.match.lower() in text.lower()
                if hit:
                    outs = self._rule_outputs(rule, text, params)
                    if outs:
                        return outs
            return [Output("say", text=script.default_reply or FALLBACK_REPLY)]
        if self.responses_done == 0 and self.active is None and script.greeting:
            return [Output("say", text=script.greeting)]
        return [Output("say", text=script.default_reply or instructions or FALLBACK_REPLY)]

    def _response_obj(self, rid: str, params: dict[str, Any], status: str) -> dict[str, Any]:
        out_audio = self.session.get("audio", {}).get("output", {})
        return {
            "object": "realtime.response",
            "id": rid,
            "status": status,
            "status_details": None,
            "output": [],
            "conversation_id": self.conversation_id,
            "output_modalities": params.get("output_modalities", self.session.get("output_modalities", ["audio"])),
            "max_output_tokens": params.get("max_output_tokens", self.session.get("max_output_tokens", "inf")),
            "audio": {
                "output": {
                    "format": out_audio.get("format", {"type": "audio/pcmu"}),
                    "voice": out_audio.get("voice", "alloy"),
                }
            },
            "usage": None,
            "metadata": params.get("metadata"),
        }

    async def create_response(
        self, params: dict[str, Any], sb: Sideband | None = None, client_event_id: str | None = None
    ) -> None:
        if self.active is not None:
            await self.error(
                sb,
                f"Conversation already has an active response in progress: {self.active.response_id}. "
                "Wait until the response is finished before creating a new one.",
                code="conversation_already_has_active_response",
                client_event_id=client_event_id,
            )
            return
        outputs = self.plan(params)
        active = Active(hex_id("resp_", 12))
        self.active = active
        self._update_idle()
        active.task = self.call.spawn(self._run_response(active, params, outputs), "response")

    async def _run_response(self, active: Active, params: dict[str, Any], outputs: list[Output]) -> None:
        rid = active.response_id
        text_mode = "text" in (params.get("output_modalities") or self.session.get("output_modalities") or ["audio"])
        await self.emit({"type": "response.created", "response": self._response_obj(rid, params, "in_progress")})
        await self.emit(
            {
                "type": "rate_limits.updated",
                "rate_limits": [
                    {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
                    {"name": "tokens", "limit": 40000, "remaining": 38000, "reset_seconds": 3.0},
                ],
            }
        )
        spc = self.cfg.speech_seconds_per_char
        for idx, out in enumerate(outputs):
            item_id = hex_id("item_", 12)
            prev = self.last_item_id
            if out.kind == "say":
                item: dict[str, Any] = {"id": item_id, "object": "realtime.item", "type": "message",
                                        "status": "in_progress", "role": "assistant", "content": []}
                active.output.append(item)
                await self.emit(
                    {"type": "response.output_item.added", "response_id": rid, "output_index": idx, "item": item}
                )
                await self.emit({"type": "conversation.item.added", "previous_item_id": prev, "item": item})
                self.last_item_id = item_id
                part = {"type": "text", "text": ""} if text_mode else {"type": "audio", "transcript": ""}
                await self.emit(
                    {
                        "type": "response.content_part.added",
                        "response_id": rid,
                        "item_id": item_id,
                        "output_index": idx,
                        "content_index": 0,
                        "part": part,
                    }
                )
                if not text_mode and not active.audio_started:
                    active.audio_started = True
                    await self._start_playback(rid)
                if not text_mode:
                    self._extend_playback(len(out.text))
                active.chars += len(out.text)
                chunks = re.findall(r"\S+\s*", out.text) or [out.text]
                delta_type = "response.output_text.delta" if text_mode else "response.output_audio_transcript.delta"
                for chunk in chunks:
                    await self.emit(
                        {
                            "type": delta_type,
                            "response_id": rid,
                            "item_id": item_id,
                            "output_index": idx,
                            "content_index": 0,
                            "delta": chunk,
                        }
                    )
                    # Generation runs faster than playback (about 4x), which leaves room for a cancel.
                    await asyncio.sleep(len(chunk) * spc / 4)
                if text_mode:
                    await self.emit(
                        {
                            "type": "response.output_text.done",
                            "response_id": rid,
                            "item_id": item_id,
                            "output_index": idx,
                            "content_index": 0,
                            "text": out.text,
                        }
                    )
                    done_part = {"type": "text", "text": out.text}
                    content = [{"type": "output_text", "text": out.text}]
                else:
                    await self.emit(
                        {
                            "type": "response.output_audio_transcript.done",
                            "response_id": rid,
                            "item_id": item_id,
                            "output_index": idx,
                            "content_index": 0,
                            "transcript": out.text,
                        }
                    )
                    done_part = {"type": "audio", "transcript": out.text}
                    content = [{"type": "output_audio", "transcript": out.text}]
                await self.emit(
                    {
                        "type": "response.content_part.done",
                        "response_id": rid,
                        "item_id": item_id,
                        "output_index": idx,
                        "content_index": 0,
                        "part": done_part,
                    }
                )
                item = {**item, "status": "completed", "content": content}
            elif out.kind == "mcp":
                mcp_item, follow_up = await self._mcp_call(rid, idx, item_id, out, active)
                outputs.append(follow_up)
                if mcp_item is None:  # the tool was not there or not approved: nothing to add for this output
                    continue
                item = mcp_item
            else:
                fc_id = hex_id("call_", 8)
                item = {
                    "id": item_id,
                    "object": "realtime.item",
                    "type": "function_call",
                    "status": "in_progress",
                    "name": out.name,
                    "call_id": fc_id,
                    "arguments": "",
                }
                active.output.append(item)
                await self.emit(
                    {"type": "response.output_item.added", "response_id": rid, "output_index": idx, "item": item}
                )
                await self.emit({"type": "conversation.item.added", "previous_item_id": prev, "item": item})
                self.last_item_id = item_id
                await self.emit(
                    {
                        "type": "response.function_call_arguments.delta",
                        "response_id": rid,
                        "item_id": item_id,
                        "output_index": idx,
                        "call_id": fc_id,
                        "delta": out.arguments,
                    }
                )
                await self.emit(
                    {
                        "type": "response.function_call_arguments.done",
                        "response_id": rid,
                        "item_id": item_id,
                        "output_index": idx,
                        "call_id": fc_id,
                        "name": out.name,
                        "arguments": out.arguments,
                    }
                )
                item = {**item, "status": "completed", "arguments": out.arguments}
                self.pending_calls[fc_id] = out.name
            active.output[-1] = item  # the item this output added (an MCP output may have added none)
            self.items[item_id] = item
            await self.emit(
                {"type": "response.output_item.done", "response_id": rid, "output_index": idx, "item": item}
            )
            await self.emit({"type": "conversation.item.done", "previous_item_id": prev, "item": item})
        resp = self._response_obj(rid, params, "completed")
        resp["output"] = active.output
        resp["usage"] = self._usage(active.chars, text_mode)
        self.active = None
        self.responses_done += 1
        await self.emit({"type": "response.done", "response": resp})
        self.first_response_done.set()
        self._update_idle()
        log.info("call %s model response %s: %s", self.call.call_id, rid,
                 " + ".join(f"say {o.text!r}" if o.kind == "say" else f"{o.kind} {o.name}{o.arguments}"
                            for o in outputs))

    # ------------------------------------------------------------------ MCP tools (the platform's side)
    def _mcp_servers(self) -> dict[str, dict[str, Any]]:
        return {t["server_label"]: t for t in self.session.get("tools") or []
                if isinstance(t, dict) and t.get("type") == "mcp" and t.get("server_label")}

    async def _list_mcp_tools(self) -> None:
        """List every MCP server's tools, one after the other, with the events the service sends."""
        from .mcp_platform import McpFailure, list_tools

        try:
            for label, tool in self._mcp_servers().items():
                item_id = hex_id("mcpl_", 12)
                item: dict[str, Any] = {"id": item_id, "type": "mcp_list_tools", "server_label": label, "tools": []}
                prev = self.last_item_id
                self.last_item_id = item_id
                await self.emit({"type": "conversation.item.added", "previous_item_id": prev, "item": item})
                await self.emit({"type": "mcp_list_tools.in_progress", "item_id": item_id})
                try:
                    tools = await list_tools(tool, self.cfg.mcp_timeout_s)
                except McpFailure as exc:
                    log.info("call %s mcp: listing %s failed: %s", self.call.call_id, label, exc.error)
                    self.mcp_tools[label] = None
                    await self.emit({"type": "mcp_list_tools.failed", "item_id": item_id})
                else:
                    self.mcp_tools[label] = tools
                    item = {**item, "tools": tools}
                    await self.emit({"type": "mcp_list_tools.completed", "item_id": item_id})
                self.items[item_id] = item
                await self.emit({"type": "conversation.item.done", "previous_item_id": prev, "item": item})
        finally:
            self.mcp_listed.set()

    async def _mcp_call(self, rid: str, idx: int, item_id: str, out: Output,
                        active: Active) -> tuple[dict[str, Any] | None, Output]:
        """One MCP call inside a response: (the finished mcp_call item or None, what the model says next)."""
        from .mcp_platform import McpFailure, call_tool, needs_approval

        script = self.call.scenario.model
        # The listing started with the first sideband; a tool is only known once it is over.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.mcp_listed.wait(), self.cfg.mcp_timeout_s * 4)
        server = self._mcp_servers().get(out.server)
        listed = self.mcp_tools.get(out.server)
        known = {t["name"]: t for t in listed or []}
        if server is None or out.name not in known:
            # A real model cannot call a tool it was never given: it can only say the system is not there.
            why = "the tool is not available" if server is not None else "no such server"
            return None, Output("say", text=render(script.mcp_failed, {"error": why, "name": out.name}))
        approval_id: str | None = None
        read_only = bool((known[out.name].get("annotations") or {}).get("readOnlyHint"))
        if needs_approval(server, out.name, read_only):
            approval_id = hex_id("mcpr_", 12)
            request = {"id": approval_id, "type": "mcp_approval_request", "server_label": out.server,
                       "name": out.name, "arguments": out.arguments}
            prev = self.last_item_id
            self.last_item_id = approval_id
            self.items[approval_id] = request
            waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            self.mcp_approvals[approval_id] = waiter
            await self.emit({"type": "conversation.item.added", "previous_item_id": prev, "item": request})
            await self.emit({"type": "conversation.item.done", "previous_item_id": prev, "item": request})
            try:
                approved = await asyncio.wait_for(waiter, self.cfg.mcp_timeout_s)
            except TimeoutError:
                approved = False
            self.mcp_approvals.pop(approval_id, None)
            if not approved:
                return None, Output("say", text=render(script.mcp_failed, {"error": "the call was not approved",
                                                                           "name": out.name}))
        prev = self.last_item_id
        item: dict[str, Any] = {"id": item_id, "type": "mcp_call", "server_label": out.server, "name": out.name,
                                "arguments": "", "approval_request_id": approval_id, "output": None, "error": None}
        active.output.append(item)
        await self.emit({"type": "response.output_item.added", "response_id": rid, "output_index": idx, "item": item})
        await self.emit({"type": "conversation.item.added", "previous_item_id": prev, "item": item})
        self.last_item_id = item_id
        await self.emit({"type": "response.mcp_call_arguments.delta", "response_id": rid, "item_id": item_id,
                         "output_index": idx, "delta": out.arguments})
        await self.emit({"type": "response.mcp_call_arguments.done", "response_id": rid, "item_id": item_id,
                         "output_index": idx, "arguments": out.arguments})
        await self.emit({"type": "response.mcp_call.in_progress", "item_id": item_id, "output_index": idx})
        try:
            output = await call_tool(server, out.name, out.arguments, self.cfg.mcp_timeout_s)
        except McpFailure as exc:
            log.info("call %s mcp: %s.%s failed: %s", self.call.call_id, out.server, out.name, exc.error)
            item = {**item, "arguments": out.arguments, "error": exc.error}
            await self.emit({"type": "response.mcp_call.failed", "item_id": item_id, "output_index": idx})
            follow = Output("say", text=render(script.mcp_failed, {"error": exc.error.get("message", ""),
                                                                   "name": out.name}))
        else:
            item = {**item, "arguments": out.arguments, "output": output}
            await self.emit({"type": "response.mcp_call.completed", "item_id": item_id, "output_index": idx})
            values: dict[str, Any] = {"output": output, "name": out.name}
            try:
                parsed = json.loads(output)
                if isinstance(parsed, dict):
                    values.update({k: v for k, v in parsed.items() if k not in values})
            except ValueError:
                pass
            follow = Output("say", text=render(script.after_function.get(out.name, "{output}"), values))
        return item, follow

    @staticmethod
    def _usage(chars: int, text_mode: bool) -> dict[str, Any]:
        out_tokens = max(1, chars // 4)
        text_t, audio_t = (out_tokens, 0) if text_mode else (out_tokens // 4, out_tokens - out_tokens // 4)
        return {
            "total_tokens": 120 + out_tokens,
            "input_tokens": 120,
            "output_tokens": out_tokens,
            "input_token_details": {"text_tokens": 100, "audio_tokens": 20, "cached_tokens": 0},
            "output_token_details": {"text_tokens": text_t, "audio_tokens": audio_t},
        }

    # ------------------------------------------------------------------ playback (output_audio_buffer.*)
    async def _start_playback(self, rid: str) -> None:
        if self.playback is not None:
            # The previous response's audio is still draining: the new audio queues behind it.
            try:
                await asyncio.shield(self.playback)
            except asyncio.CancelledError:
                if self.playback is not None and not self.playback.done():
                    raise
        self.playback_response_id = rid
        self._playback_end = time.monotonic()
        await self.emit({"type": "output_audio_buffer.started", "response_id": rid})
        self.playback = self.call.spawn(self._playback(rid), "playback")
        self._update_idle()

    def _extend_playback(self, chars: int) -> None:
        self._playback_end = max(self._playback_end, time.monotonic()) + chars * self.cfg.speech_seconds_per_char

    async def _playback(self, rid: str) -> None:
        # Audio finishes draining after response.done; `stopped` comes when the speaking time has elapsed.
        while True:
            if self.active is None or self.active.response_id != rid:
                remaining = self._playback_end - time.monotonic()
                if remaining <= 0:
                    break
                await asyncio.sleep(remaining)
            else:
                await asyncio.sleep(max(0.001, min(0.05, self._playback_end - time.monotonic())))
        self.playback = None
        self.playback_response_id = None
        await self.emit({"type": "output_audio_buffer.stopped", "response_id": rid})
        self._update_idle()

    async def _clear_playback(self) -> None:
        task, rid = self.playback, self.playback_response_id
        if task is None:
            return
        self.playback = None
        self.playback_response_id = None
        task.cancel()
        await self.emit({"type": "output_audio_buffer.cleared", "response_id": rid})
        self._update_idle()

    async def cancel_response(self, reason: str) -> None:
        active = self.active
        if active is None:
            return
        if active.task is not None:
            active.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await active.task
        self.active = None
        resp = self._response_obj(active.response_id, {}, "cancelled")
        resp["status_details"] = {"type": "cancelled", "reason": reason}
        resp["output"] = [
            {**i, "status": "incomplete"} if i.get("status") == "in_progress" else i for i in active.output
        ]
        resp["usage"] = self._usage(active.chars, False)
        await self.emit({"type": "response.done", "response": resp})
        self.responses_done += 1
        self.first_response_done.set()
        if self.playback_response_id == active.response_id:
            await self._clear_playback()
        self._update_idle()

    # ------------------------------------------------------------------ the scripted caller
    def _auto_response(self) -> bool:
        td = self.session.get("audio", {}).get("input", {}).get("turn_detection")
        return bool(td) and td.get("create_response", True)

    def _interrupts(self) -> bool:
        td = self.session.get("audio", {}).get("input", {}).get("turn_detection")
        return bool(td) and td.get("interrupt_response", True)

    async def caller_says(self, text: str) -> None:
        item_id = hex_id("item_", 12)
        start = self._ms()
        await self.emit({"type": "input_audio_buffer.speech_started", "audio_start_ms": start, "item_id": item_id})
        if self._interrupts() and (self.active is not None or self.playback is not None):
            # Barge-in: server VAD cancels the response and clears the playback buffer.
            if self.active is not None:
                await self.cancel_response("turn_detected")
            await self._clear_playback()
        await asyncio.sleep(len(text) * self.cfg.speech_seconds_per_char)
        await self.emit({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": self._ms(), "item_id": item_id})
        prev = self.last_item_id
        await self.emit({"type": "input_audio_buffer.committed", "previous_item_id": prev, "item_id": item_id})
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        self.items[item_id] = item
        self.last_item_id = item_id
        await self.emit({"type": "conversation.item.added", "previous_item_id": prev, "item": item})
        await self.emit({"type": "conversation.item.done", "previous_item_id": prev, "item": item})
        if self.session.get("audio", {}).get("input", {}).get("transcription"):
            tokens = max(1, len(text) // 4)
            await self.emit(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item_id,
                    "content_index": 0,
                    "transcript": text,
                    "usage": {
                        "type": "tokens",
                        "total_tokens": tokens + 10,
                        "input_tokens": 10,
                        "input_token_details": {"text_tokens": 0, "audio_tokens": 10},
                        "output_tokens": tokens,
                    },
                }
            )
        self.pending_user_text = text
        log.info("call %s caller says %r", self.call.call_id, text)
        if self._auto_response():
            await self.create_response({})

    async def caller_dtmf(self, digits: str) -> None:
        for i, d in enumerate(digits):
            if i:
                await asyncio.sleep(max(0.01, self.cfg.caller_step_delay_s / 2))
            await self.emit(
                {"type": "input_audio_buffer.dtmf_event_received", "event": d, "received_at": int(time.time())}
            )
        log.info("call %s caller keys %d digit(s)", self.call.call_id, len(digits))

    async def caller_silence(self) -> None:
        td = self.session.get("audio", {}).get("input", {}).get("turn_detection") or {}
        idle_ms = td.get("idle_timeout_ms") or 5000
        # The silence lasted idle_timeout_ms by definition, even if the scripted call is younger than that.
        end = max(self._ms(), idle_ms)
        item_id = hex_id("item_", 12)
        await self.emit(
            {
                "type": "input_audio_buffer.timeout_triggered",
                "audio_start_ms": end - idle_ms,
                "audio_end_ms": end,
                "item_id": item_id,
            }
        )
        log.info("call %s caller silent (idle timeout)", self.call.call_id)
        if self._auto_response():
            await self.create_response({"instructions": f'Say: "{self.call.scenario.model.on_idle}"'})

    async def wait_idle(self, settle: float) -> None:
        """Wait until the agent has been idle (no response, no playback, no unanswered tool call) for `settle` s."""
        deadline = time.monotonic() + self.cfg.caller_idle_timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.info("call %s caller stopped waiting for the agent", self.call.call_id)
                await asyncio.sleep(settle)
                return
            try:
                await asyncio.wait_for(self.idle.wait(), remaining)
            except TimeoutError:
                continue
            await asyncio.sleep(settle)
            if self.idle.is_set():
                return

    async def run_script(self) -> None:
        script = self.call.scenario.script
        try:
            if script.wait_for_greeting and (script.steps or script.on_end == "hangup"):
                try:
                    await asyncio.wait_for(self.first_response_done.wait(), script.greeting_timeout_s)
                except TimeoutError:
                    log.info("call %s caller heard no greeting", self.call.call_id)
            for step in script.steps:
                if self.call.state != ACCEPTED:
                    return
                await self.run_step(step)
            if script.on_end == "hangup" and self.call.state == ACCEPTED:
                await self.wait_idle(self.cfg.caller_step_delay_s)
                await self.emu.caller_hangup(self.call.call_id, "caller_hangup")
        except asyncio.CancelledError:
            raise
        except Exception:  # a scripting bug must not kill the server silently
            log.exception("call %s caller script failed", self.call.call_id)

    async def run_step(self, step: Step) -> None:
        settle = self.cfg.caller_step_delay_s if step.after is None else step.after
        if step.wait_for == "agent_idle":
            await self.wait_idle(settle)
        else:
            await asyncio.sleep(settle)
        action = step.action
        if action == "say":
            await self.caller_says(step.say or "")
        elif action == "dtmf":
            await self.caller_dtmf(step.dtmf or "")
        elif action == "silence":
            await self.caller_silence()
        elif action == "wait":
            await asyncio.sleep(step.wait or 0)
        elif action == "drop_sideband":
            log.info("call %s caller script: dropping sidebands", self.call.call_id)
            self.abort_sidebands()
        elif action == "hangup":
            await self.emu.caller_hangup(self.call.call_id, "caller_hangup")
