"""The Emulator: one aiohttp app (REST + WebSocket + control API) plus the SIP front door."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from . import chat, control, endpoints, rest, sideband
from .calls import ACCEPTED, ENDED, EXPIRED, REJECTED, RINGING, Call, CallLeg
from .config import EmulatorConfig
from .endpoints import EndpointStore
from .errors import EMULATOR
from .model import RealtimeSession
from .scenario import Scenario, resolve
from .util import hex_id, mask_number, new_call_id
from .webhooks import WebhookSender, build_incoming_body

log = logging.getLogger("emulator")

ScenarioSpec = None | str | dict | Scenario


def session_limit_reason(limit_s: float) -> str:
    if limit_s >= 60 and limit_s % 60 == 0:
        return f"Your session hit the maximum duration of {int(limit_s // 60)} minutes."
    return f"Your session hit the maximum duration of {limit_s:g} seconds."


def build_sip_headers(caller: str, dialed: str, caller_name: str | None, extra: dict[str, str],
                      sip_call_id: str | None = None) -> list[dict[str, str]]:
    name = f'"{caller_name}" ' if caller_name else ""
    headers = [
        {"name": "From", "value": f"{name}<sip:{caller}@emulator.local>;tag={hex_id('', 4)}"},
        {"name": "To", "value": f"<sip:{dialed}@emulator.local>"},
        {"name": "Call-ID", "value": sip_call_id or hex_id("", 16)},
    ]
    headers += [{"name": k, "value": str(v)} for k, v in extra.items()]
    return headers


class Emulator:
    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.calls: dict[str, Call] = {}
        self.endpoints = EndpointStore()
        self.chat = chat.ChatState()  # chat completions (post-call analysis): requests seen, faults to inject
        self.webhooks = WebhookSender(self)
        self._runner: web.AppRunner | None = None
        self.http_port: int | None = None
        self.sip: Any = None
        self.app = self._build_app()

    # ------------------------------------------------------------------ lifecycle
    def _build_app(self) -> web.Application:
        app = web.Application()
        app[EMULATOR] = self
        # Both prefixes are always served: /openai/v1 (Azure) and /v1 (OpenAI).
        prefixes = ["/openai/v1", "/v1"]
        rest.add_routes(app, prefixes)
        sideband.add_routes(app, prefixes)
        chat.add_routes(app, prefixes)
        endpoints.add_routes(app)
        control.add_routes(app)
        return app

    @property
    def http_url(self) -> str:
        return f"http://{self.config.host}:{self.http_port}"

    @property
    def sip_port(self) -> int | None:
        return self.sip.port if self.sip else None

    @property
    def api_base(self) -> str:
        """Base URL for OpenAI(base_url=...): /openai/v1 in azure mode, /v1 in openai mode."""
        return self.http_url + ("/openai/v1" if self.config.mode == "azure" else "/v1")

    async def start(self) -> Emulator:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.http_port)
        await site.start()
        self.http_port = self._runner.addresses[0][1]
        if self.config.sip_port is not None:
            from .sip import SipServer

            self.sip = SipServer(self, self.config.host, self.config.sip_port)
            await self.sip.start()
        log.info("emulator listening http=%s sip=%s mode=%s", self.http_url, self.sip_port, self.config.mode)
        return self

    async def stop(self) -> None:
        for call in list(self.calls.values()):
            if call.session is not None:
                call.session.shutdown()
                call.session.abort_sidebands()
            for task in list(call.tasks):
                task.cancel()
        for call in list(self.calls.values()):
            if call.tasks:
                await asyncio.gather(*call.tasks, return_exceptions=True)
        if self.sip is not None:
            await self.sip.stop()
        await self.webhooks.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Emulator:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # ------------------------------------------------------------------ placing calls
    async def place_call(self, scenario: ScenarioSpec = None, caller: str | None = None, dialed: str | None = None,
                         headers: dict[str, str] | None = None, *, leg: CallLeg | None = None,
                         sip_headers: list[dict[str, str]] | None = None, source: str = "control") -> str:
        """Start a ringing call (and its webhook delivery); returns the call_id at once."""
        sc = resolve(scenario, self.config.scenario_dir)
        caller = caller or sc.call.caller
        dialed = dialed or sc.call.dialed
        if sip_headers is None:
            sip_headers = build_sip_headers(caller, dialed, sc.call.caller_name, {**sc.call.headers, **(headers or {})})
        call = Call(call_id=new_call_id(), scenario=sc, caller=caller, dialed=dialed, sip_headers=sip_headers,
                    source=source, leg=leg)
        self.calls[call.call_id] = call
        log.info("call %s ringing from=%s to=%s scenario=%s via=%s", call.call_id, mask_number(caller),
                 mask_number(dialed), sc.name, source)
        call.spawn(self._ring_timeout(call), "ring-timeout")
        call.spawn(self.webhooks.deliver(call), "webhook")
        return call.call_id

    async def _ring_timeout(self, call: Call) -> None:
        await asyncio.sleep(self.config.ring_timeout_s)
        if call.state == RINGING:
            await self.expire_call(call, "ring_timeout")

    # ------------------------------------------------------------------ transitions
    async def accept_call(self, call: Call, body: dict[str, Any]) -> None:
        call.accept_body = body
        call.transition(ACCEPTED)
        call.session = RealtimeSession(self, call)
        call.spawn(self._session_limit(call), "session-limit")
        if call.leg is not None:
            await call.leg.on_accepted()

    async def reject_call(self, call: Call, status: int) -> None:
        call.reject_status = status
        call.transition(REJECTED, f"rejected_{status}")
        if call.leg is not None:
            await call.leg.on_rejected(status)

    async def expire_call(self, call: Call, reason: str, notify_leg: bool = True) -> None:
        call.transition(EXPIRED, reason)
        if call.leg is not None and notify_leg:
            await call.leg.on_expired(reason)

    async def refer_call(self, call: Call, target: str) -> None:
        call.refer_target = target
        call.mark("refer_received")
        log.info("call %s refer to %s", call.call_id, mask_number(target))
        if call.leg is not None:
            await call.leg.on_refer(target)
        call.spawn(self._end_after_refer(call), "refer-end")

    async def _end_after_refer(self, call: Call) -> None:
        await asyncio.sleep(self.config.refer_end_delay_s)
        if call.state == ACCEPTED:
            await self.platform_hangup(call, "referred", self.config.hangup_close_code)

    async def platform_hangup(self, call: Call, reason: str, close_code: int, close_reason: str = "") -> None:
        """The platform ends the call (/hangup, REFER done, session limit): close frames, BYE to the caller."""
        if call.state != ACCEPTED:
            return
        call.transition(ENDED, reason)
        if call.session is not None:
            call.session.shutdown()
            await call.session.close_sidebands(close_code, close_reason)
        if call.leg is not None:
            await call.leg.on_platform_hangup(reason)

    async def caller_hangup(self, call_id: str, reason: str = "caller_hangup", notify_leg: bool = True) -> None:
        """The caller leaves. Ringing: the call expires. Accepted: sidebands drop without a close frame (1006)."""
        call = self.calls[call_id]
        if call.state == RINGING:
            await self.expire_call(call, "caller_cancelled", notify_leg=notify_leg)
        elif call.state == ACCEPTED:
            call.transition(ENDED, reason)
            if call.session is not None:
                call.session.shutdown()
                call.session.abort_sidebands()
            if call.leg is not None and notify_leg:
                # Scripted hang-up on a SIP call: the SIP UA gets a BYE so its dialog ends too.
                await call.leg.on_platform_hangup(reason)

    async def _session_limit(self, call: Call) -> None:
        limit = self.config.effective_session_limit_s()
        await asyncio.sleep(limit)
        if call.state == ACCEPTED:
            await self.platform_hangup(call, "session_limit", 1001, session_limit_reason(limit))

    # ------------------------------------------------------------------ helpers
    # The tests' API: each call names its own deadline.
    async def wait_for_state(self, call_id: str, state: str | set[str] | list[str],
                             timeout: float = 5.0) -> str:  # noqa: ASYNC109
        states = {state} if isinstance(state, str) else set(state)
        return await self.calls[call_id].wait_for_state(states, timeout)

    async def send_test_webhook(self, ep: dict[str, Any], event_type: str) -> int | None:
        """POST /webhook_endpoints/{id}/test: one signed delivery of a sample event to the endpoint."""
        from .scenario import default_scenario
        from .webhooks import Target

        sample = Call(call_id=new_call_id(), scenario=default_scenario(None), caller="+15555550100",
                      dialed="+15555550199", sip_headers=build_sip_headers("+15555550100", "+15555550199", None, {}))
        sample.webhook_id = hex_id("wh_")
        sample.webhook_body = build_incoming_body(sample)
        if event_type != "realtime.call.incoming":
            body = json.loads(sample.webhook_body)
            body["type"], body["data"] = event_type, {"id": hex_id("resp_", 12)}
            sample.webhook_body = json.dumps(body, separators=(",", ":")).encode()
        await self.webhooks.attempt(sample, Target(ep["url"], ep["signing_secret"], ep["id"]), "test")
        return sample.webhook_attempts[-1]["status"]

