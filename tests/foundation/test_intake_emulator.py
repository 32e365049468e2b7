"""Intake behind a real HTTP endpoint, driven by the emulator (signed webhooks, redelivery, REST call control)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from emulator import Emulator
from emulator.testing import test_config as emulator_config

from .harness import Workflow, make_intake

pytestmark = pytest.mark.timeout(30)


class Endpoint:
    """POST /api/calls/incoming -> Intake.handle, as the Functions trigger does."""

    def __init__(self) -> None:
        self.workflow = Workflow()
        self.intake = None
        self.statuses: list[int] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        assert self.intake is not None
        result = await self.intake.handle(await request.read(), request.headers, **self.workflow.kwargs())
        self.statuses.append(result.status)
        return web.json_response(result.body, status=result.status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/calls/incoming", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/api/calls/incoming"

    async def stop(self) -> None:
        if self.intake is not None:
            await self.intake._cc.aclose()
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def stack() -> AsyncIterator[tuple[Emulator, Endpoint]]:
    endpoint = Endpoint()
    await endpoint.start()
    emu = Emulator(emulator_config(webhook_url=endpoint.url))
    await emu.start()
    assert emu.config.webhook_secret and emu.config.api_key
    endpoint.intake = make_intake(emu.http_url, (emu.config.webhook_secret,))
    yield emu, endpoint
    await emu.stop()
    await endpoint.stop()


async def settle(emu: Emulator, call_id: str, endpoint: Endpoint, deliveries: int) -> None:
    """Wait until the endpoint has answered `deliveries` times and the emulator has read every answer.

    Our handler counts a delivery before aiohttp writes the response, so the emulator's sender task
    (named "<call_id>:webhook") must also be finished before its attempt records hold a status.
    """
    for _ in range(500):
        sending = [t for t in emu.calls[call_id].tasks if t.get_name().endswith(":webhook") and not t.done()]
        if len(endpoint.statuses) >= deliveries and not sending:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"deliveries did not settle in 10 s: {len(endpoint.statuses)} answered, "
                         f"attempts {emu.calls[call_id].webhook_attempts}")


async def test_call_is_accepted_with_the_profile_and_workflow_started(stack):
    emu, endpoint = stack
    call_id = await emu.place_call("demo")
    assert await emu.wait_for_state(call_id, "accepted") == "accepted"
    await settle(emu, call_id, endpoint, 1)
    call = emu.calls[call_id]
    assert call.accept_body is not None and call.accept_body["model"] == "gpt-realtime-test"
    assert "format" not in str(call.accept_body)
    [(started_id, call_input)] = endpoint.workflow.started
    assert started_id == call_id
    assert call_input["caller"] == "+1425***1212" and call_input["profile_name"] == "reception"
    assert [a["status"] for a in call.webhook_attempts] == [200]


async def test_duplicate_delivery_accepts_once(stack):
    emu, endpoint = stack
    call_id = await emu.place_call({"name": "dup", "faults": {"duplicate_webhook": True}})
    await emu.wait_for_state(call_id, "accepted")
    await settle(emu, call_id, endpoint, 2)
    assert [a["status"] for a in emu.calls[call_id].webhook_attempts] == [200, 200]
    assert len(endpoint.workflow.started) == 1


async def test_accept_500_then_platform_redelivery_succeeds(stack):
    emu, endpoint = stack
    call_id = await emu.place_call({"name": "flaky", "faults": {"accept": {"status": 500, "times": 1}}})
    await emu.wait_for_state(call_id, "accepted")
    await settle(emu, call_id, endpoint, 2)
    assert [a["status"] for a in emu.calls[call_id].webhook_attempts] == [502, 200]
    assert len(endpoint.workflow.started) == 1


@pytest.mark.parametrize("fault", [{"bad_signature": True}, {"stale_timestamp_s": 400}, {"stale_timestamp_s": -400}])
async def test_unauthentic_deliveries_never_touch_the_call(stack, fault):
    emu, endpoint = stack
    call_id = await emu.place_call({"name": "bad", "faults": fault})
    await settle(emu, call_id, endpoint, emu.config.webhook_max_attempts)
    call = emu.calls[call_id]
    assert {a["status"] for a in call.webhook_attempts} == {401}
    assert call.state == "ringing" and call.accept_body is None
    assert endpoint.workflow.started == []


async def test_extra_signatures_still_verify(stack):
    emu, endpoint = stack
    call_id = await emu.place_call({"name": "multi", "faults": {"extra_signatures": 2}})
    assert await emu.wait_for_state(call_id, "accepted") == "accepted"


async def test_late_redelivery_after_caller_left_is_a_clean_200(stack):
    emu, endpoint = stack
    # Restarted process: no dedupe memory, no workflow; the caller hung up while it rang.
    endpoint.intake = make_intake(emu.http_url, (emu.config.webhook_secret,))
    call_id = await emu.place_call({"name": "gone", "faults": {"webhook_status_delay_s": 0.3}})
    await emu.caller_hangup(call_id)
    await settle(emu, call_id, endpoint, 1)
    assert emu.calls[call_id].webhook_attempts[0]["status"] == 200
    assert endpoint.workflow.started == []
    assert emu.calls[call_id].state == "expired"
