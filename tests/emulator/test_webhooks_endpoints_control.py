"""Webhook retries and faults, webhook endpoint CRUD, control API, CLI, scenario validation."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import aiohttp
import openai
import pytest
from openai import OpenAI
from standardwebhooks import Webhook

from emulator.scenario import ScenarioError, parse_scenario, resolve
from emulator.util import mask_number

from .helpers import AUTH, WEBHOOK, Receiver, post


@pytest.fixture
async def rx():
    r = await Receiver().start()
    yield r
    await r.stop()


async def test_non_2xx_is_retried_with_same_id_and_fresh_timestamp(emulator_factory, rx):
    rx.statuses = [500, 503, 200]
    emu = await emulator_factory(webhook_url=rx.url, webhook_backoff_s=(1.05, 0.05))
    call_id = await emu.place_call()
    await rx.wait_count(3)
    ids = {h["webhook-id"] for h, _ in rx.requests}
    stamps = [int(h["webhook-timestamp"]) for h, _ in rx.requests]
    assert len(ids) == 1 and stamps[1] > stamps[0]
    assert len({b for _, b in rx.requests}) == 1
    for h, b in rx.requests:
        Webhook(emu.config.webhook_secret).verify(b, h)
    attempts = emu.calls[call_id].webhook_attempts
    assert [a["status"] for a in attempts] == [500, 503, 200] and "webhook_sent" in emu.calls[call_id].timestamps
    await asyncio.sleep(0.2)
    assert len(rx.requests) == 3


async def test_slow_answer_is_retried(emulator_factory):
    rx = await Receiver(delay_s=0.5).start()
    try:
        emu = await emulator_factory(webhook_url=rx.url, webhook_timeout_s=0.2)
        call_id = await emu.place_call()
        await rx.wait_count(2)
        assert emu.calls[call_id].webhook_attempts[0]["error"] == "timeout"
    finally:
        await rx.stop()


async def test_retries_stop_once_call_is_not_ringing(emulator_factory, rx):
    rx.statuses = [500] * 10
    # The reject must land within the backoff after the first attempt (0.2 s was a race on a loaded machine);
    # the check then waits past the point where the retry would have gone out.
    emu = await emulator_factory(webhook_url=rx.url, webhook_backoff_s=(1.0,))
    call_id = await emu.place_call()
    await rx.wait_count(1)
    await post(emu, f"/openai/v1/realtime/calls/{call_id}/reject", {})
    await asyncio.sleep(1.5)
    assert len(rx.requests) == 1


@pytest.mark.parametrize(
    "fault,error",
    [
        ({"bad_signature": True}, "signature"),
        ({"stale_timestamp_s": 400}, "too old"),
        ({"stale_timestamp_s": -400}, "too new"),
    ],
)
async def test_signature_faults_fail_verification(emulator_factory, rx, fault, error):
    emu = await emulator_factory(webhook_url=rx.url)
    await emu.place_call({"faults": fault})
    await rx.wait_count(1)
    h, b = rx.requests[0]
    with pytest.raises(openai.InvalidWebhookSignatureError, match=error):
        OpenAI(api_key="x").webhooks.unwrap(b, h, secret=emu.config.webhook_secret)


async def test_extra_signatures_still_verify(emulator_factory, rx):
    emu = await emulator_factory(webhook_url=rx.url)
    await emu.place_call({"faults": {"extra_signatures": 2}})
    await rx.wait_count(1)
    h, b = rx.requests[0]
    assert len(h["webhook-signature"].split(" ")) == 3
    OpenAI(api_key="x").webhooks.unwrap(b, h, secret=emu.config.webhook_secret)
    Webhook(emu.config.webhook_secret).verify(b, h)


async def test_duplicate_and_late_deliveries(emulator_factory, rx):
    emu = await emulator_factory(webhook_url=rx.url, ring_timeout_s=0.2)
    call_id = await emu.place_call({"faults": {"duplicate_webhook": True, "late_webhook_after_s": 0.5}})
    await rx.wait_count(3, timeout=3)
    assert len({h["webhook-id"] for h, _ in rx.requests}) == 1
    assert [a["kind"] for a in emu.calls[call_id].webhook_attempts] == ["initial", "duplicate", "late"]
    assert emu.calls[call_id].state == "expired"  # the late delivery arrives after the call is gone


async def test_webhook_url_can_change_after_start(emulator, rx):
    emulator.config.webhook_url = rx.url
    call_id = await emulator.place_call()
    await rx.wait_count(1)
    headers, body = rx.requests[0]
    assert json.loads(body)["data"]["call_id"] == call_id and headers["webhook-signature"].startswith("v1,")


async def test_webhook_endpoints_azure_crud_and_delivery(emulator, rx):
    base = emulator.http_url + "/openai/v1/dashboard/webhook_endpoints"
    async with aiohttp.ClientSession(headers=AUTH) as s:
        async with s.post(base, json={"name": "sb", "url": rx.url, "event_types": ["realtime.call.incoming"]}) as r:
            assert r.status == 200
            created = await r.json()
        assert created["object"] == "webhook.endpoint" and created["signing_secret"].startswith("whsec_")
        assert created["signing_secret_hint"].startswith("whsec_...")
        async with s.get(base) as r:
            listed = await r.json()
        assert listed["object"] == "list" and [e["id"] for e in listed["data"]] == [created["id"]]
        assert "signing_secret" not in listed["data"][0]
        async with s.post(f"{base}/{created['id']}", json={"signing_secret": "whsec_x"}) as r:
            assert r.status == 400
        async with s.post(f"{base}/{created['id']}", json={"name": "renamed"}) as r:
            assert (await r.json())["name"] == "renamed"
        async with s.post(base, json={"url": "http://example.com/x", "event_types": ["realtime.call.incoming"]}) as r:
            assert r.status == 400  # https required (loopback http allowed for local runs)
        async with s.post(base, json={"url": rx.url, "event_types": ["nope"]}) as r:
            assert r.status == 400
        async with s.post(
            base, json={"url": rx.url, "event_types": ["realtime.call.incoming"]}, headers={"api-key": "bad"}
        ) as r:
            assert r.status == 401
        # Registered endpoints receive incoming calls signed with their own secret.
        call_id = await emulator.place_call()
        await rx.wait_count(1)
        h, b = rx.requests[0]
        assert Webhook(created["signing_secret"]).verify(b, h)["data"]["call_id"] == call_id
        WEBHOOK.validate_json(b)
        async with s.delete(f"{base}/{created['id']}") as r:
            assert (await r.json())["deleted"] is True
        async with s.get(f"{base}/{created['id']}") as r:
            assert r.status == 404


async def test_webhook_endpoints_openai_paths(emulator, rx):
    base = emulator.http_url + "/v1/webhook_endpoints"
    async with aiohttp.ClientSession(headers=AUTH) as s:
        async with s.post(base, json={"name": "n", "url": rx.url, "event_types": ["realtime.call.incoming"]}) as r:
            ep = await r.json()
        assert ep["object"] == "webhook_endpoint"
        async with s.post(f"{base}/{ep['id']}/rotate_secret", json={}) as r:
            rotated = await r.json()
        assert rotated["signing_secret"] != ep["signing_secret"]
        async with s.post(f"{base}/{ep['id']}/test", json={"event_type": "realtime.call.incoming"}) as r:
            result = await r.json()
        assert result["success"] is True and result["status_code"] == 200
        h, b = rx.requests[-1]
        Webhook(rotated["signing_secret"]).verify(b, h)


async def test_control_api(emulator):
    async with aiohttp.ClientSession() as s:
        async with s.post(
            emulator.http_url + "/_emulator/calls",
            json={"scenario": {"name": "x"}, "caller": "+15550001111", "headers": {"X-Tenant": "t1"}},
        ) as r:
            assert r.status == 201
            call_id = (await r.json())["call_id"]
        async with s.post(emulator.http_url + "/_emulator/calls", json={"scenario": {"bogus": 1}}) as r:
            assert r.status == 400 and "bogus" in (await r.json())["error"]["message"]
        await post(emulator, f"/openai/v1/realtime/calls/{call_id}/reject", {"status_code": 486})
        async with s.get(f"{emulator.http_url}/_emulator/calls/{call_id}") as r:
            info = await r.json()
        assert info["state"] == "rejected" and info["caller"] == "+1555***1111"
        assert {"call_id", "state", "ended_reason", "accept_body", "client_events", "webhook_attempts", "timestamps",
                "refer_target"} <= set(info)
        assert any(h == {"name": "X-Tenant", "value": "t1"} for h in emulator.calls[call_id].sip_headers)
        async with s.get(emulator.http_url + "/_emulator/calls") as r:
            assert [c["call_id"] for c in (await r.json())["data"]] == [call_id]
        async with s.get(emulator.http_url + "/_emulator/health") as r:
            assert (await r.json())["status"] == "ok"


def test_scenario_validation_errors_are_clear():
    with pytest.raises(ScenarioError, match=r"script.steps.0.*exactly one"):
        parse_scenario({"script": {"steps": [{"say": "a", "dtmf": "1"}]}})
    with pytest.raises(ScenarioError, match=r"dtmf"):
        parse_scenario({"script": {"steps": [{"dtmf": "12x"}]}})
    with pytest.raises(ScenarioError, match=r"model.rules.0"):
        parse_scenario({"model": {"rules": [{"match": "x"}]}})
    with pytest.raises(ScenarioError, match=r"not found"):
        resolve("no-such-scenario", None)
    assert resolve("demo", None).call.headers == {"X-Customer-Id": "42"}
    assert resolve(None, None).name == "default"


def test_scenario_dir_json_and_yaml(tmp_path):
    (tmp_path / "vip.json").write_text(
        json.dumps({"call": {"dialed": "+18885550000"}, "model": {"greeting": "Hi VIP"}})
    )
    (tmp_path / "default.yaml").write_text("model:\n  default_reply: custom\n")
    from emulator.scenario import find_by_dialed

    assert resolve("vip", str(tmp_path)).model.greeting == "Hi VIP"
    assert find_by_dialed("+18885550000", str(tmp_path)).name == "vip"
    assert resolve(None, str(tmp_path)).model.default_reply == "custom"
    (tmp_path / "bad.yaml").write_text("script: [1, 2\n")
    with pytest.raises(ScenarioError, match="cannot parse"):
        resolve("bad", str(tmp_path))


def test_mask_number():
    assert mask_number("+14255551212") == "+1425***1212"
    assert mask_number('"A" <sip:+14255551212@x>') == '"A" <sip:+1425***1212@x>'


def test_cli_prints_endpoints_and_serves(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emulator",
            "--http-port",
            str(port),
            "--sip-port",
            "0",
            "--api-key",
            "k1",
            "--mode",
            "azure",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [proc.stdout.readline() for _ in range(7)]
        assert any(f"http://127.0.0.1:{port}/openai/v1/realtime/calls" in line for line in lines), lines
        import urllib.request

        body = json.dumps({"scenario": "demo"}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/_emulator/calls", data=body, method="POST",
                                     headers={"content-type": "application/json"})
        call_id = json.loads(urllib.request.urlopen(req, timeout=5).read())["call_id"]
        req = urllib.request.Request(f"http://127.0.0.1:{port}/openai/v1/realtime/calls/{call_id}/reject", data=b"{}",
                                     method="POST", headers={"api-key": "k1"})
        assert urllib.request.urlopen(req, timeout=5).status == 200
        time.sleep(0.2)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "ringing" in err and "+1425***1212" in err and "+14255551212" not in err and "k1" not in err


async def test_webhook_endpoint_errors_unknown_id_bad_json_and_auth(emulator):
    base = emulator.http_url + "/v1/webhook_endpoints"
    async with aiohttp.ClientSession(headers=AUTH) as s:
        for method, path in [("GET", ""), ("POST", ""), ("DELETE", ""), ("POST", "/rotate_secret"), ("POST", "/test")]:
            async with s.request(method, f"{base}/we_missing{path}", json={}) as r:
                assert r.status == 404 and (await r.json())["error"]["code"] == "not_found", (method, path)
            async with s.request(method, f"{base}/we_missing{path}", json={}, headers={"api-key": "bad"}) as r:
                assert r.status == 401, (method, path)
        async with s.post(base, data=b"{not json", headers={"content-type": "application/json"}) as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_json"
        async with s.post(base, json=[1]) as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_type"


async def test_call_control_rejects_a_body_that_is_not_a_json_object(emulator):
    call_id = await emulator.place_call()
    async with aiohttp.ClientSession(headers=AUTH) as s:
        url = f"{emulator.http_url}/openai/v1/realtime/calls/{call_id}"
        async with s.post(f"{url}/reject", data=b"{", headers={"content-type": "application/json"}) as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_json"
        async with s.post(f"{url}/accept", json=["realtime"]) as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_type"
    assert emulator.calls[call_id].state == "ringing"
