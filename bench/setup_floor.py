"""The floor of a call set-up's CPU: each operation a set-up cannot avoid, alone, with the libraries the project must
use (docs/architecture.md's design card), measured in isolation on this machine.

A Switchboard call set-up does, in the worker (in Azure: the Python worker; locally: the runner's process):

- verify the webhook's signature (HMAC-SHA256, ``shared.webhook.WebhookVerifier``);
- the Durable existence check, ``get_status`` through the azure-functions-durable SDK (the Durable HTTP API);
- the accept: one POST on a reused ``httpx.AsyncClient`` (the call-control client's settings);
- ``start_new`` through the SDK;
- the live-calls row: one table upsert through azure-data-tables (to Azurite);
- the call's lease: one table insert;
- the sideband: one ``websockets`` connect and the first send (the greeting's ``response.create``);
- the greeting's turn: one table upsert.

Each operation runs ``--n`` times one at a time and ``--n`` times ``--burst`` at once (as in a burst of calls),
warm (clients made once and reused, as the app does), and its CPU is this process's CPU time divided by the count.
The servers (a plain aiohttp HTTP server standing in for the platform, a websockets server, Azurite, and the local
runner serving bench/floor_app.py for the Durable API) run in other processes; their CPU is not counted, except the
local runner's, which is printed beside (in Azure it is the Functions host's and the Durable extension's work).

The sum is printed next to the goal (issue 11: ≤ 5 ms of app CPU per call set-up), next to the peer's floor (the
platform sample: verify, a POST on a new connection with the standard library, a websockets connect and send) and
next to what bench/burst.py measures. It is the arithmetic behind "what stands in the way" in docs/performance.md.

    .venv/bin/python bench/setup_floor.py [--n 300] [--burst 100]

Needs Azurite on 127.0.0.1:10000-10002 (``make bench`` starts it).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._load import ROOT, cpu_seconds  # noqa: E402
from localrun.stack import azurite_connection_string, free_port  # noqa: E402

GOAL_MS = 5.0

# A platform stand-in: answers every POST with 200 {} (the accept), and every WebSocket with nothing (it reads until
# the client goes). Its own CPU is not ours.
SERVERS = r'''
import asyncio, sys
from aiohttp import web
import websockets

async def post(request):
    await request.read()
    return web.json_response({})

async def ws_handler(ws):
    async for _ in ws:
        pass

async def main(http_port, ws_port):
    app = web.Application()
    app.router.add_post("/{tail:.*}", post)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", http_port).start()
    async with websockets.serve(ws_handler, "127.0.0.1", ws_port, compression=None, max_queue=None):
        print("ready", flush=True)
        await asyncio.Future()

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
'''

Op = Callable[[int], Awaitable[None]]


async def measure(op: Op, n: int, at_once: int) -> float:
    """CPU ms per operation of this process: ``n`` operations, ``at_once`` at a time."""
    await op(-1)  # warm: the first use opens connections, imports lazily-imported modules
    t0 = time.process_time()
    for start in range(0, n, at_once):
        await asyncio.gather(*(op(i) for i in range(start, min(n, start + at_once))))
    return (time.process_time() - t0) * 1000 / n


def signed_delivery(secret: str) -> tuple[bytes, dict[str, str]]:
    from shared.webhook import sign

    body = json.dumps({"id": "evt_1", "type": "realtime.call.incoming", "created_at": int(time.time()),
                       "data": {"call_id": "rtc_" + uuid.uuid4().hex, "sip_headers": [
                           {"name": "From", "value": "sip:+14255551212@example.com"},
                           {"name": "To", "value": "sip:+18005551212@example.com"}]}}).encode()
    ts = int(time.time())
    return body, {"webhook-id": "wh_1", "webhook-timestamp": str(ts),
                  "webhook-signature": sign(secret, "wh_1", ts, body)}


def start_runner(port: int, rpc_port: int, key: str) -> subprocess.Popen:
    env = {**os.environ, "LOCALRUN_MASTER_KEY": key, "LOCALRUN_FUNCTION_KEY": key, "PYTHONUNBUFFERED": "1",
           "AzureWebJobsStorage": azurite_connection_string(), "FUNCTIONS_WORKER_RUNTIME": "python"}
    proc = subprocess.Popen([sys.executable, "-m", "localrun", "--app", "bench.floor_app:app", "--app-dir", str(ROOT),
                             "--port", str(port), "--rpc-port", str(rpc_port), "--no-local-settings"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/host/ping", timeout=2):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the local runner did not start")


def client_binding(port: int, rpc_port: int, key: str) -> str:
    from localrun.host.app_index import read_host_json
    from localrun.host.durable_api import PREFIX, DurableApi

    hub = ((read_host_json(ROOT).get("extensions") or {}).get("durableTask") or {}).get("hubName") or "localhub"
    api = DurableApi(None, set(), lambda: f"http://127.0.0.1:{port}{PREFIX}/", hub,
                     rpc_base_url=lambda: f"http://127.0.0.1:{rpc_port}{PREFIX}/", key=key)
    return api.client_binding()


async def run(args: argparse.Namespace, http_port: int, ws_port: int, port: int, rpc_port: int, key: str,
              runner: subprocess.Popen) -> None:
    import azure.durable_functions as df
    import httpx
    import websockets
    from azure.data.tables.aio import TableClient

    from shared.storage import storage_client_options
    from shared.webhook import WebhookVerifier

    table = TableClient.from_connection_string(azurite_connection_string(), table_name=f"floor{uuid.uuid4().hex[:8]}",
                                               **storage_client_options())
    # The call-control client's settings (shared/call_control.py).
    http = httpx.AsyncClient(limits=httpx.Limits(max_connections=100, max_keepalive_connections=100,
                                                 keepalive_expiry=60), follow_redirects=False)
    sockets: list = []
    try:
        await table.create_table()
        client = df.DurableOrchestrationClient(client_binding(port, rpc_port, key))
        secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
        verifier = WebhookVerifier((secret,))
        body, headers = signed_delivery(secret)
        accept_body = json.dumps({"type": "realtime", "model": "gpt-realtime", "instructions": "x" * 400}).encode()
        greeting = json.dumps({"type": "response.create", "event_id": "evt_sw_1",
                               "response": {"instructions": "Say exactly: Thank you for calling."}})
        run_id = uuid.uuid4().hex[:8]

        async def verify(i: int) -> None:
            verifier.verify(body, headers)

        async def existence_check(i: int) -> None:
            await client.get_status(f"floor-{run_id}-missing-{i}")

        async def accept(i: int) -> None:
            r = await http.post(f"http://127.0.0.1:{http_port}/openai/v1/realtime/calls/rtc_{i}/accept",
                                content=accept_body, headers={"Content-Type": "application/json", "api-key": "k"})
            r.raise_for_status()

        async def start(i: int) -> None:
            await client.start_new("noop", f"floor-{run_id}-{uuid.uuid4().hex}", {"call_id": f"rtc_{i}"})

        async def upsert(i: int) -> None:
            await table.upsert_entity({"PartitionKey": f"p{i}", "RowKey": "live", "expires": "2030-01-01T00:00:00Z"})

        async def insert(i: int) -> None:
            await table.create_entity({"PartitionKey": uuid.uuid4().hex, "RowKey": "lease", "owner": "a1b2c3",
                                       "state": "held", "ttl_seconds": 15.0, "pid": 1, "renewals": 0})

        async def sideband(i: int) -> None:
            ws = await websockets.connect(f"ws://127.0.0.1:{ws_port}/openai/v1/realtime?call_id=rtc_{i}",
                                          additional_headers={"api-key": "k"}, compression=None)
            await ws.send(greeting)
            sockets.append(ws)

        # (name, operation, part of the set-up?, the peer does it too?)
        ops: list[tuple[str, Op, str]] = [
            ("verify the signature (HMAC)", verify, "peer"),
            ("Durable existence check (SDK get_status)", existence_check, "durable"),
            ("accept: httpx POST, reused client", accept, "peer"),
            ("start_new (SDK)", start, "durable"),
            ("live-calls row: table upsert (Azure SDK)", upsert, ""),
            ("lease: table insert (Azure SDK)", insert, ""),
            ("sideband: websockets connect + first send", sideband, "peer"),
            ("greeting turn: table upsert (Azure SDK)", upsert, ""),
        ]
        results: list[tuple[str, float, float, float, str]] = []
        for name, op, tag in ops:
            runner_cpu0 = cpu_seconds(runner.pid)
            alone = await measure(op, args.n, 1)
            together = await measure(op, args.n, args.burst)
            runner_ms = (cpu_seconds(runner.pid) - runner_cpu0) * 1000 / (2 * args.n + 2)
            results.append((name, alone, together, runner_ms if tag == "durable" else 0.0, tag))
            for ws in sockets:
                await ws.close()
            sockets.clear()

        # The platform sample's accept: a new connection per call with the standard library (bench/peer_webhook.py).
        def peer_accept() -> None:
            req = urllib.request.Request(f"http://127.0.0.1:{http_port}/accept", data=accept_body, method="POST",
                                         headers={"Content-Type": "application/json", "api-key": "k"})
            urllib.request.urlopen(req, timeout=10).read()

        peer_accept()
        t0 = time.process_time()
        for _ in range(args.n):
            peer_accept()
        peer_accept_ms = (time.process_time() - t0) * 1000 / args.n
    finally:
        for ws in sockets:
            await ws.close()
        await http.aclose()
        await table.delete_table()
        await table.close()
        # The SDK's process-wide aiohttp session: it has no public close; this is what it runs on a connection error.
        from azure.durable_functions.models.utils.http_utils import _handle_request_error

        await _handle_request_error()

    print(f"\nThe floor of one call set-up: each unavoidable operation alone, CPU ms of this process per operation "
          f"({args.n} one at a time | {args.n} in groups of {args.burst} at once)")
    print(f"  {'operation':<44} {'alone':>8} {'burst':>8}   local runner (host side)")
    for name, alone, together, runner_ms, _ in results:
        host = f"{runner_ms:8.2f}" if runner_ms else ""
        print(f"  {name:<44} {alone:8.2f} {together:8.2f}   {host}")
    worker_alone = sum(r[1] for r in results)
    worker_burst = sum(r[2] for r in results)
    host = sum(r[3] for r in results)
    print(f"  {'sum, worker side':<44} {worker_alone:8.2f} {worker_burst:8.2f}")
    print(f"  {'sum, with the local runner side of the Durable API':<44} {worker_alone + host:8.2f} "
          f"{worker_burst + host:8.2f}")
    peer = sum(r[1] for r in results if r[4] == "peer" and r[0].startswith(("verify", "sideband"))) + peer_accept_ms
    print(f"  {'peer floor: verify + urllib POST (new conn.) + ws':<44} {peer:8.2f}")
    print("Goal (issue 11, goal 1: app CPU per call set-up ≤ 5 ms):")
    print(f"  {'floor of a Switchboard set-up (worker, alone)':<44} {worker_alone:9.2f} ms     goal ≤ {GOAL_MS:g} ms "
          f"{'MET ' if worker_alone <= GOAL_MS else 'MISS'}   baseline (peer floor) {peer:6.2f} ms")
    print("  Not in the floor: the host's side of the webhook request, the orchestration's replay and the activity "
          "dispatch (bench/burst.py --profile splits them out), nor the events after the greeting.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="operations per measurement")
    parser.add_argument("--burst", type=int, default=100, help="operations at once in the burst measurement")
    args = parser.parse_args()
    http_port, ws_port, port, rpc_port = free_port(), free_port(), free_port(), free_port()
    key = secrets.token_hex(8)
    servers = subprocess.Popen([sys.executable, "-c", SERVERS, str(http_port), str(ws_port)], stdout=subprocess.PIPE,
                               text=True)
    runner = start_runner(port, rpc_port, key)
    try:
        assert servers.stdout is not None and servers.stdout.readline().strip() == "ready"
        asyncio.run(run(args, http_port, ws_port, port, rpc_port, key, runner))
    finally:
        runner.terminate()
        servers.terminate()
        runner.wait(10)
        servers.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
