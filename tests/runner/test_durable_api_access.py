"""Who may use the runner's Durable HTTP API.

The SDK reaches it keyless on a private port bound to 127.0.0.1; on the app's port it needs a key, also from
loopback, because a local tunnel (ngrok, devtunnels) makes every request from the internet arrive from loopback.
The test puts a TCP forwarder in front of the app's port, as such a tunnel does.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest
from yarl import URL

from tests.runner.conftest import start_host
from tests.runner.sample_app import app as sample_app

FKEY = {"x-functions-key": "fkey-test"}


@pytest.fixture
async def host():
    h = await start_host(sample_app)
    yield h
    await h.stop()


@contextlib.asynccontextmanager
async def tunnel(target_port: int):
    """A loopback TCP forwarder to `target_port`: what `ngrok http 7071` looks like to the runner."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(client_r, up_w), pipe(up_r, client_w))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def test_through_a_tunnel_the_durable_api_needs_a_key(host, http):
    # An instance to find, started the way the app starts them (through the SDK, on the private port).
    async with http.post(host.url_for("start/waiter?id=t-1"), json={"n": 1}, headers=FKEY) as r:
        assert r.status == 202
    async with tunnel(host.port) as public:
        for method, path in [("GET", "instances/"), ("GET", "instances/t-1"),
                             ("POST", "instances/t-1/raiseEvent/go"), ("POST", "instances/t-1/terminate"),
                             ("POST", "orchestrators/waiter/t-2")]:
            async with http.request(method, f"{public}/runtime/webhooks/durabletask/{path}", json={}) as r:
                assert r.status == 401, (method, path, r.status)
            async with http.request(method, f"{public}/runtime/webhooks/durabletask/{path}", json={},
                                    headers=FKEY) as r:
                assert r.status == 401, "the function key does not open the Durable API"
        async with http.get(f"{public}/runtime/webhooks/durabletask/instances/t-1",
                            headers={"x-functions-key": "mkey-test"}) as r:
            assert r.status == 202 and (await r.json())["instanceId"] == "t-1"
    # Nothing the unauthenticated requests asked for happened.
    assert host.engine.get_status("t-1")["runtimeStatus"] == "Running"
    assert host.engine.get_status("t-2") is None


async def test_the_status_urls_handed_out_carry_the_extensions_key_and_work(host, http):
    async with http.post(host.url_for("start/waiter?id=t-3"), json={"n": 1}, headers=FKEY) as r:
        payload = await r.json()
    url = payload["statusQueryGetUri"]
    assert url.startswith(f"{host.base_url}/runtime/webhooks/durabletask/instances/t-3?") and "code=" in url
    assert host.master_key not in url  # the extension's own key, not the master key
    async with http.get(url) as r:
        assert r.status == 202
    async with http.get(url.replace(f"code={host.durable_key}", "code=wrong")) as r:
        assert r.status == 401
    async with http.get(host.url_for("items/1"), params={"code": host.durable_key}) as r:
        assert r.status == 401, "the extension's key opens the Durable API only"


async def test_the_sdk_port_listens_on_loopback_only_and_serves_only_the_durable_api(http):
    h = await start_host(sample_app, listen="0.0.0.0")
    try:
        assert h.rpc_port and h.rpc_port != h.port
        binding = h.durable.client_binding()
        assert f'"rpcBaseUrl": "http://127.0.0.1:{h.rpc_port}/runtime/webhooks/durabletask/"' in binding
        listening = [s.getsockname() for site in h._rpc_runner.sites for s in site._server.sockets]
        assert listening and all(addr[0] == "127.0.0.1" for addr in listening)
        async with http.get(f"http://127.0.0.1:{h.rpc_port}/runtime/webhooks/durabletask/instances/") as r:
            assert r.status == 200
        async with http.get(f"http://127.0.0.1:{h.rpc_port}/api/items/1", headers=FKEY) as r:
            assert r.status == 404
        # From another address of this machine, the app's port answers and the SDK's port does not.
        other = _non_loopback_address()
        if other is not None:
            async with http.get(f"http://{other}:{h.port}/admin/host/ping") as r:
                assert r.status == 200
            with pytest.raises(OSError):
                socket.create_connection((other, h.rpc_port), timeout=2).close()
    finally:
        await h.stop()


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent: this only picks the outbound interface
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


async def test_management_urls_escape_the_instance_id(host, http):
    base = host.rpc_base_url
    async with http.post(URL(f"{base}orchestrators/waiter/a%3Fb%23c", encoded=True), json={"n": 1}) as r:
        assert r.status == 202
        payload = await r.json()
    assert payload["id"] == "a?b#c"
    assert "/instances/a%3Fb%23c?taskHub=" in payload["statusQueryGetUri"]
    async with http.get(URL(payload["statusQueryGetUri"], encoded=True)) as r:
        assert r.status == 202 and (await r.json())["instanceId"] == "a?b#c"
