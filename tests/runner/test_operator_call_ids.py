"""Operator routes refuse call ids that are not platform call ids, before any Durable API request.

The SDK pastes the instance id into the Durable HTTP API's URL as it is, so an id such as `.`, `#` or `?`
(percent-encoded in the operator URL, decoded by the host into the route parameter) would change which
Durable resource is addressed: `rtc_live?x` read the live call `rtc_live`, `.` read the instance list.
"""

from __future__ import annotations

import pytest
from yarl import URL

from tests.runner.conftest import start_host
from tests.runner.operator_app import app as operator_app
from tests.runner.test_operator_endpoints import FKEY, start_call

BAD_IDS = ["%2e", "%2e%2e", "%23", "%3F", "%3Fx", "rtc_live%3Fx", "rtc_live%23x", "a%20b", "%25", "_leading",
           "a" * 129]
# Ids the runner's router cannot match to the operator routes at all (a decoded `/`, a line break): 404.
UNROUTABLE_IDS = ["rtc_live%2Fterminate", "x%0d%0ay"]


@pytest.fixture
async def host():
    h = await start_host(operator_app, route_prefix="")  # the real operator routes: api/calls/...
    yield h
    await h.stop()


@pytest.mark.parametrize("raw_id", BAD_IDS)
async def test_a_malformed_call_id_is_400_with_a_json_error_on_every_route(host, http, raw_id, caplog):
    await start_call(host, "rtc_live")
    for method, route, body in [("GET", f"api/calls/{raw_id}", None), ("POST", f"api/calls/{raw_id}/hangup", None),
                                ("POST", f"api/calls/{raw_id}/transfer", {"target": "sales"})]:
        # encoded=True: the client must send the id exactly as written (yarl would resolve `%2e` away).
        async with http.request(method, URL(host.url_for(route), encoded=True), json=body, headers=FKEY) as r:
            assert r.status == 400, (route, r.status, await r.text())
            error = (await r.json())["error"]
            assert "call id" in error, error
    assert "Traceback" not in caplog.text
    # Nothing happened to the live call: no event reached it.
    status = host.engine.get_status("rtc_live")
    assert status["runtimeStatus"] == "Running"


async def test_a_valid_call_id_still_reaches_its_call(host, http):
    await start_call(host, "rtc_live.1-x_y")
    async with http.get(host.url_for("api/calls/rtc_live.1-x_y"), headers=FKEY) as r:
        assert r.status == 200 and (await r.json())["call_id"] == "rtc_live.1-x_y"
    async with http.post(host.url_for("api/calls/rtc_live.1-x_y/hangup"), headers=FKEY) as r:
        assert r.status == 202


@pytest.mark.parametrize("raw_id", UNROUTABLE_IDS)
async def test_an_unroutable_call_id_never_reaches_a_call(host, http, raw_id):
    await start_call(host, "rtc_live")
    for method, route in [("GET", f"api/calls/{raw_id}"), ("POST", f"api/calls/{raw_id}/hangup")]:
        async with http.request(method, URL(host.url_for(route), encoded=True), headers=FKEY) as r:
            assert r.status in (400, 404), (route, r.status)
    assert host.engine.get_status("rtc_live")["runtimeStatus"] == "Running"
