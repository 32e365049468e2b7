"""Call-control REST client against a real local server: paths, bodies, 404 = gone, errors, retry policy."""

from __future__ import annotations

import asyncio
import logging
import socket

import httpx
import pytest

from shared.auth import ApiKeyAuth
from shared.call_control import CallControlClient, CallControlError

from .standin import NOT_FOUND, SERVER_ERROR, StandIn, Step

KEY = "sk-super-secret-key-123"
FAST = httpx.Timeout(connect=1.0, read=0.3, write=1.0, pool=1.0)


def client_for(url: str, **kw) -> CallControlClient:
    return CallControlClient(url, ApiKeyAuth(KEY), accept_timeout=FAST, timeout=FAST, backoff=(0.01, 0.02), **kw)


async def test_actions_post_to_the_documented_paths_with_bodies(standin):
    cc = client_for(standin.url + "/")
    try:
        body = {"type": "realtime", "model": "gpt-realtime", "instructions": "hi"}
        results = [await cc.accept("rtc_u1_abc", body), await cc.reject("rtc_u1_abc", 486),
                   await cc.reject("rtc_u1_abc"), await cc.refer("rtc_u1_abc", "tel:+14155550123"),
                   await cc.hangup("rtc_u1_abc")]
    finally:
        await cc.aclose()
    assert [(r.action, r.status, r.gone) for r in results] == [
        ("accept", 200, False), ("reject", 200, False), ("reject", 200, False), ("refer", 200, False),
        ("hangup", 200, False)]
    reqs = standin.requests
    assert [r.path for r in reqs] == [f"/openai/v1/realtime/calls/rtc_u1_abc/{a}"
                                      for a in ("accept", "reject", "reject", "refer", "hangup")]
    assert reqs[0].json() == body
    assert reqs[1].json() == {"status_code": 486}
    assert reqs[2].json() == {}
    assert reqs[3].json() == {"target_uri": "tel:+14155550123"}
    assert reqs[4].body == b""
    assert all(r.headers["api-key"] == KEY for r in reqs)
    assert all("OpenAI-Beta" not in r.headers for r in reqs)
    assert standin.connections == 1  # one pooled keep-alive connection for all five requests


async def test_404_call_id_not_found_is_gone_not_an_error(standin):
    standin.script = {a: [NOT_FOUND] for a in ("accept", "reject", "refer", "hangup")}
    cc = client_for(standin.url)
    try:
        assert (await cc.accept("rtc_1", {"type": "realtime", "model": "m"})).gone
        assert (await cc.reject("rtc_1", 480)).gone
        assert (await cc.refer("rtc_1", "sip:a@b.example")).gone
        assert (await cc.hangup("rtc_1")).gone
    finally:
        await cc.aclose()


async def test_other_404_is_an_error(standin):
    # A plain 404 (wrong endpoint or deployment) must not silently look like "caller hung up".
    standin.script = {"accept": [Step(404, {"error": {"message": "Resource not found", "code": "404"}})]}
    cc = client_for(standin.url)
    try:
        with pytest.raises(CallControlError) as info:
            await cc.accept("rtc_1", {"type": "realtime", "model": "m"})
    finally:
        await cc.aclose()
    assert info.value.status == 404 and info.value.code == "404"


async def test_error_envelope_is_parsed_and_secret_free(standin, caplog):
    standin.script = {"accept": [Step(401, {"error": {"message": "Incorrect API key provided.",
                                                       "type": "invalid_request_error", "code": "invalid_api_key"}})]}
    cc = client_for(standin.url)
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(CallControlError) as info:
            await cc.accept("rtc_1", {"type": "realtime", "model": "m"})
    finally:
        await cc.aclose()
    err = info.value
    assert (err.status, err.code, err.message) == (401, "invalid_api_key", "Incorrect API key provided.")
    assert KEY not in str(err) and KEY not in repr(err.__dict__) and err.__cause__ is None
    assert KEY not in caplog.text


async def test_accept_is_not_resent_after_5xx_or_read_timeout(standin):
    standin.script = {"accept": [SERVER_ERROR, Step()]}
    cc = client_for(standin.url)
    try:
        with pytest.raises(CallControlError) as info:
            await cc.accept("rtc_1", {"type": "realtime", "model": "m"})
        assert info.value.status == 500
        standin.script = {"accept": [Step(delay=1.0)]}
        with pytest.raises(CallControlError) as info:
            await cc.accept("rtc_2", {"type": "realtime", "model": "m"})
        assert info.value.status is None and info.value.code == "timeout"
    finally:
        await cc.aclose()
    assert len(standin.actions("accept")) == 2  # one per call: never a blind second accept


async def test_hangup_is_retried_on_5xx_and_timeout(standin):
    standin.script = {"hangup": [SERVER_ERROR, Step(delay=1.0), Step()]}
    cc = client_for(standin.url)
    try:
        result = await cc.hangup("rtc_1")
    finally:
        await cc.aclose()
    assert result.status == 200 and not result.gone
    assert len(standin.actions("hangup")) == 3


async def test_hangup_gives_up_after_bounded_attempts(standin):
    standin.script = {"hangup": [SERVER_ERROR]}
    cc = client_for(standin.url)
    try:
        with pytest.raises(CallControlError):
            await cc.hangup("rtc_1")
    finally:
        await cc.aclose()
    assert len(standin.actions("hangup")) == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_connection_refused_is_retried_even_for_accept():
    # Refused = never sent, so retrying accept is safe. The server comes up during the backoff.
    port = _free_port()
    server = StandIn()
    cc = CallControlClient(f"http://127.0.0.1:{port}", ApiKeyAuth(KEY), backoff=(0.3, 0.3))

    async def late_start() -> None:
        await asyncio.sleep(0.1)
        await server.start(port)

    starter = asyncio.create_task(late_start())
    try:
        result = await cc.accept("rtc_1", {"type": "realtime", "model": "m"})
    finally:
        await starter
        await cc.aclose()
        await server.stop()
    assert result.status == 200
    assert len(server.actions("accept")) == 1


async def test_connection_refused_every_time_is_an_error():
    cc = CallControlClient(f"http://127.0.0.1:{_free_port()}", ApiKeyAuth(KEY), backoff=(0.0,))
    try:
        with pytest.raises(CallControlError) as info:
            await cc.reject("rtc_1", 486)
    finally:
        await cc.aclose()
    assert info.value.status is None and info.value.code == "connect_failed"


@pytest.mark.parametrize("call_id", ["", "../x", "rtc 1", "rtc/1", "rtc_1?x=1", "a" * 200, "rtc_\u00e9"])
async def test_unsafe_call_ids_are_refused_before_any_request(standin, call_id):
    cc = client_for(standin.url)
    try:
        with pytest.raises(ValueError):
            await cc.hangup(call_id)
    finally:
        await cc.aclose()
    assert standin.requests == []


async def test_bad_arguments_are_refused_before_any_request(standin):
    cc = client_for(standin.url)
    try:
        with pytest.raises(ValueError):
            await cc.reject("rtc_1", 200)
        with pytest.raises(ValueError):
            await cc.refer("rtc_1", "http://example.com")
        with pytest.raises(ValueError):
            await cc.accept("rtc_1", {"model": "m"})
    finally:
        await cc.aclose()
    assert standin.requests == []


async def test_shared_http_client_is_not_closed_by_us(standin):
    async with httpx.AsyncClient() as http:
        cc = CallControlClient(standin.url, ApiKeyAuth(KEY), http=http)
        await cc.hangup("rtc_1")
        await cc.aclose()
        assert not http.is_closed


@pytest.mark.parametrize("error", [httpx.ProxyError, httpx.LocalProtocolError, httpx.UnsupportedProtocol])
async def test_other_transport_errors_are_call_control_errors_and_never_resent(error):
    # Callers handle CallControlError; a raw httpx error would escape them, carrying the request (and
    # so the auth header) with it. Whether it was sent is unknown, so it is not retried.
    attempts = []

    def fail(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        raise error("boom", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(fail)) as http:
        cc = CallControlClient("https://res.openai.azure.com", ApiKeyAuth(KEY), http=http, backoff=(0.0,))
        for action in (lambda: cc.accept("rtc_1", {"type": "realtime", "model": "m"}), lambda: cc.hangup("rtc_1")):
            attempts.clear()
            with pytest.raises(CallControlError) as info:
                await action()
            assert info.value.status is None and info.value.code == "transport_error"
            assert info.value.__cause__ is None and KEY not in str(info.value)
            assert len(attempts) == 1
