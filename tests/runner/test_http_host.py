"""The runner's HTTP layer through real sockets: routes, methods, auth levels, errors, the banner."""

from __future__ import annotations

import pytest

from tests.runner.conftest import start_host
from tests.runner.sample_app import app as sample_app

FKEY = {"x-functions-key": "fkey-test"}


@pytest.fixture
async def host():
    h = await start_host(sample_app)
    yield h
    await h.stop()


async def test_route_parameters_and_typed_constraints(host, http):
    async with http.get(host.url_for("items/42?q=x"), headers=FKEY) as r:
        assert r.status == 200
        assert await r.json() == {"route": "int", "item_id": "42", "q": "x"}
    async with http.get(host.url_for("items/special"), headers=FKEY) as r:
        assert (await r.json()) == {"route": "literal"}  # a literal segment wins over a parameter
    async with http.get(host.url_for("items/widget"), headers=FKEY) as r:
        assert (await r.json()) == {"route": "name", "name": "widget", "method": "GET"}
    async with http.get(host.url_for("files/a/b/c.txt")) as r:
        assert (await r.json()) == {"path": "a/b/c.txt"}
    async with http.get(host.url_for("ITEMS/7"), headers=FKEY) as r:
        assert (await r.json())["item_id"] == "7"  # routes are case-insensitive, like the Functions host


async def test_unknown_route_is_404_and_wrong_method_is_405(host, http):
    async with http.get(host.url_for("nothing/here"), headers=FKEY) as r:
        assert r.status == 404
    async with http.get(f"{host.base_url}/notapi/echo") as r:
        assert r.status == 404
    async with http.get(host.url_for("echo")) as r:
        assert r.status == 405
        assert r.headers["Allow"] == "POST"
    async with http.post(host.url_for("items/5"), headers=FKEY) as r:
        assert r.status == 405
    async with http.delete(host.url_for("items/widget"), headers=FKEY) as r:
        assert (await r.json())["method"] == "DELETE"


async def test_function_auth_level_needs_a_key(host, http):
    async with http.get(host.url_for("items/1")) as r:
        assert r.status == 401
    async with http.get(host.url_for("items/1"), headers={"x-functions-key": "wrong"}) as r:
        assert r.status == 401
    async with http.get(host.url_for("items/1"), headers=FKEY) as r:
        assert r.status == 200
    async with http.get(host.url_for("items/1?code=fkey-test")) as r:
        assert r.status == 200
    async with http.get(host.url_for("items/1"), headers={"x-functions-key": "mkey-test"}) as r:
        assert r.status == 200  # the master key opens function-level routes too


async def test_admin_auth_level_needs_the_master_key(host, http):
    async with http.get(host.url_for("secret"), headers=FKEY) as r:
        assert r.status == 401
        body = await r.json()
    assert body["needs"] == "the master key" and "the key given is not valid" in body["message"], body
    async with http.post(f"{host.base_url}/admin/functions/anything") as r:
        assert r.status == 401
        assert (await r.json())["needs"] == "the master key"
    async with http.get(host.url_for("secret?code=mkey-test")) as r:
        assert r.status == 200


async def test_anonymous_route_body_headers_and_status_pass_through(host, http):
    async with http.post(host.url_for("echo"), data=b"\x00raw bytes", headers={"X-Test": "yes"}) as r:
        assert r.status == 201
        assert await r.read() == b"\x00raw bytes"
        assert r.headers["X-Echo"] == "yes"
        assert r.headers["Content-Type"].startswith("application/octet-stream")


async def test_a_failing_function_gives_500_and_the_host_keeps_serving(host, http, caplog):
    async with http.get(host.url_for("boom")) as r:
        assert r.status == 500
    assert "function boom failed" in caplog.text
    async with http.post(host.url_for("echo"), data=b"ok") as r:
        assert r.status == 201


async def test_access_log_has_one_line_per_request_without_query_or_keys(host, http, caplog):
    caplog.set_level("INFO", logger="localrun.http")
    async with http.get(host.url_for("items/3?code=fkey-test")) as r:
        assert r.status == 200
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "localrun.http"]
    assert len(lines) == 1
    assert lines[0].startswith("GET /api/items/3 200 ")
    assert "fkey-test" not in caplog.text


async def test_banner_lists_functions_and_keys(host):
    text = host.banner()
    assert f"get_item: [GET] {host.base_url}/api/items/{{item_id:int}}" in text
    assert "echo: [POST]" in text and "(auth: anonymous)" in text
    assert "fkey-test" in text and "mkey-test" in text
    assert "waiter: orchestrationTrigger" in text


async def test_ping_is_open_and_host_status_needs_the_master_key(host, http):
    async with http.get(f"{host.base_url}/admin/host/ping") as r:
        assert r.status == 200
    async with http.get(f"{host.base_url}/admin/host/status", headers=FKEY) as r:
        assert r.status == 401
    async with http.get(f"{host.base_url}/admin/host/status", headers={"x-functions-key": "mkey-test"}) as r:
        assert (await r.json())["state"] == "Running"
