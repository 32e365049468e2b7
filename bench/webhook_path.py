"""Our own time on the incoming-call webhook path, next to baselines, so the figures mean something.

    python bench/webhook_path.py                 # print figures (and the change against the saved baseline)
    python bench/webhook_path.py --save-baseline # also write bench/webhook_path.baseline.json
    python bench/webhook_path.py -n 5000         # iterations for the micro-benchmarks

Measured (all loopback, nothing leaves the machine):
- verify: shared.webhook (keys decoded once) vs openai ``webhooks.unwrap`` vs ``standardwebhooks.Webhook.verify``;
- parse, routing decision, accept-body build;
- the accept POST on the pooled keep-alive httpx client vs a naive new client per request;
- the full ``Intake.handle`` (verify -> parse -> dedupe -> decide -> accept -> start_call) against a local
  call-control stand-in running on its own thread and event loop;
- cold import time of ``shared.intake`` vs ``openai`` and ``azure.identity`` (fresh interpreters).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from aiohttp import web  # noqa: E402

from shared.auth import ApiKeyAuth  # noqa: E402
from shared.call_control import CallControlClient  # noqa: E402
from shared.intake import Intake  # noqa: E402
from shared.routing import load_rules  # noqa: E402
from shared.tools import ToolRegistry  # noqa: E402
from shared.webhook import WebhookVerifier, parse_event, parse_incoming_call, sign  # noqa: E402

BASELINE = Path(__file__).with_suffix(".baseline.json")
SECRET = "whsec_" + base64.b64encode(b"b" * 32).decode()


def body_for(call_id: str) -> bytes:
    return json.dumps(
        {
            "object": "event",
            "id": "evt_" + call_id[-12:],
            "type": "realtime.call.incoming",
            "created_at": int(time.time()),
            "data": {
                "call_id": call_id,
                "sip_media_security": "srtp",
                "sip_headers": [
                    {"name": "From", "value": '"Alice" <sip:+14255551212@sip.example.com>;tag=abc'},
                    {"name": "To", "value": "<sip:+18005551212@sip.example.com>"},
                    {"name": "Call-ID", "value": "03782086-4ce9-44bf-8b0d-4e303d2cc590"},
                    {"name": "X-Customer-Id", "value": "42"},
                ],
            },
        },
        separators=(",", ":"),
    ).encode()


def headers_for(body: bytes, msg_id: str) -> dict[str, str]:
    ts = int(time.time())
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sign(SECRET, msg_id, ts, body)}


def pct(samples_ns: list[int]) -> dict[str, float]:
    s = sorted(samples_ns)
    q = lambda p: s[min(len(s) - 1, int(p * len(s)))] / 1000.0  # noqa: E731  (microseconds)
    return {"p50_us": q(0.50), "p95_us": q(0.95), "p99_us": q(0.99), "n": len(s)}


def timed(fn: Callable[[], Any], n: int) -> dict[str, float]:
    for _ in range(min(200, n)):  # warm-up
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        out.append(time.perf_counter_ns() - t0)
    return pct(out)


async def atimed(fn: Callable[[int], Any], n: int, warmup: int = 20) -> dict[str, float]:
    for i in range(warmup):
        await fn(-1 - i)
    out = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        await fn(i)
        out.append(time.perf_counter_ns() - t0)
    return pct(out)


# ------------------------------------------------------------------------------ call-control stand-in


class StandInThread:
    """A 200-answering call-control server on its own thread and loop, so it does not share our loop."""

    def __init__(self) -> None:
        self.url = ""
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def ok(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(status=200, body=b"")

        async def start() -> None:
            app = web.Application()
            app.router.add_post("/openai/v1/realtime/calls/{call_id}/{action}", ok)
            runner = self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def __enter__(self) -> StandInThread:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


# -------------------------------------------------------------------------------------------- benches


def registry() -> ToolRegistry:
    reg = ToolRegistry()

    @reg.register("lookup_order", description="Look up an order by id", parameters={
        "type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]})
    async def lookup_order(order_id: str) -> dict:
        return {}

    return reg


def micro(n: int) -> dict[str, dict[str, float]]:
    import openai
    import standardwebhooks

    body = body_for("rtc_u1_9c6574da8b8a41a18da9308f4ad974ce")
    headers = headers_for(body, "wh_1")
    verifier = WebhookVerifier((SECRET,))
    client = openai.OpenAI(api_key="x", webhook_secret=SECRET)
    swh = standardwebhooks.Webhook(SECRET)
    rules = load_rules(ROOT / "routing.json", tool_names={"lookup_order"}, max_call_duration_seconds=900)
    profile = rules.profiles["reception"]
    reg = registry()
    from datetime import datetime

    now = datetime.now(UTC)
    results = {
        "verify (ours)": timed(lambda: verifier.verify(body, headers), n),
        "verify (openai webhooks.unwrap) [baseline]": timed(lambda: client.webhooks.unwrap(body, headers), n),
        "verify (standardwebhooks) [baseline]": timed(lambda: swh.verify(body, headers), n),
        "parse event + incoming call": timed(lambda: parse_incoming_call(parse_event(body, "wh_1")), n),
        "routing decide": timed(lambda: rules.decide("+14255551212", "+18005551212", now, None), n),
        "accept body build (per call; intake caches it)": timed(
            lambda: profile.accept_body(
                "d", [t.schema() for t in reg.for_profile(profile.tools, profile.transfer_targets or {})]
            ),
            n,
        ),
        "verify+parse+decide (ours, in-process total)": timed(
            lambda: rules.decide(
                (c := parse_incoming_call(parse_event(body, verifier.verify(body, headers)))).caller,
                c.dialed,
                now,
                None,
            ),
            n,
        ),
    }
    return results


async def network(n: int, url: str) -> dict[str, dict[str, float]]:
    auth = ApiKeyAuth("k")
    accept_body = {"type": "realtime", "model": "d", "instructions": "x"}
    results: dict[str, dict[str, float]] = {}

    pooled = CallControlClient(url, auth)
    results["accept POST, pooled keep-alive client (ours)"] = await atimed(
        lambda i: pooled.accept(f"rtc_pool_{i}", accept_body), n)

    async def naive(i: int) -> None:
        async with httpx.AsyncClient() as http:  # what "a client per request" costs
            r = await http.post(f"{url}/openai/v1/realtime/calls/rtc_naive_{i}/accept", json=accept_body,
                                headers={"api-key": "k"})
            r.raise_for_status()

    results["accept POST, new httpx client per request [baseline]"] = await atimed(naive, n)

    intake = Intake(secrets=(SECRET,), rules=load_rules(ROOT / "routing.json", tool_names={"lookup_order"},
                                                        max_call_duration_seconds=900),
                    call_control=pooled, deployment="d", tools=registry(), max_call_duration_seconds=900)
    prepared = {i: (b := body_for(f"rtc_bench_{i}"), headers_for(b, f"wh_{i}")) for i in range(-20, n)}

    async def start_call(call_id: str, call_input: dict) -> None:
        return None

    async def call_exists(call_id: str) -> bool:
        return False

    async def handle(i: int) -> None:
        b, h = prepared[i]
        result = await intake.handle(b, h, start_call=start_call, call_exists=call_exists, live_calls=None)
        assert result.status == 200 and result.body["status"] == "accepted", result

    results["Intake.handle end to end (ours, incl. accept POST)"] = await atimed(handle, n)
    await pooled.aclose()
    return results


def cold_imports(runs: int = 5) -> dict[str, dict[str, float]]:
    """Median wall time of a fresh interpreter importing a module, minus an empty interpreter."""
    def run(code: str) -> float:
        samples = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
            )
            samples.append(time.perf_counter() - t0)
        return statistics.median(samples)

    empty = run("pass")
    out = {}
    for label, module in (("import shared.intake (ours)", "shared.intake"), ("import openai [baseline]", "openai"),
                          ("import azure.identity.aio (lazy in ours)", "azure.identity.aio")):
        ms = (run(f"import {module}") - empty) * 1000
        out[label] = {"ms": round(ms, 1)}
    return out


def show(title: str, results: dict[str, dict[str, float]], baseline: dict[str, Any]) -> None:
    print(f"\n{title}")
    for name, r in results.items():
        old = baseline.get(name)
        if "ms" in r:
            delta = f"  (baseline {old['ms']:.1f} ms)" if old else ""
            print(f"  {name:<58} {r['ms']:>9.1f} ms{delta}")
            continue
        unit, scale = ("ms", 1000.0) if r["p99_us"] >= 1000 else ("us", 1.0)
        delta = f"  (baseline p50 {old['p50_us'] / scale:.2f} {unit})" if old else ""
        print(f"  {name:<58} p50 {r['p50_us'] / scale:>8.2f} {unit}  p95 {r['p95_us'] / scale:>8.2f} {unit}"
              f"  p99 {r['p99_us'] / scale:>8.2f} {unit}  n={r['n']}{delta}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=20000, help="iterations of the in-process micro-benchmarks")
    parser.add_argument("--net-n", type=int, default=1000, help="iterations of the loopback HTTP benchmarks")
    parser.add_argument("--save-baseline", action="store_true")
    args = parser.parse_args()
    baseline = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}

    print(f"python {sys.version.split()[0]} on {sys.platform}; loopback only")
    results = {}
    m = micro(args.n)
    show("In-process (one delivery)", m, baseline)
    with StandInThread() as server:
        net = asyncio.run(network(args.net_n, server.url))
    show("Loopback HTTP (call-control stand-in on its own thread)", net, baseline)
    imports = cold_imports()
    show("Cold import (fresh interpreter, minus an empty one)", imports, baseline)
    results.update(m)
    results.update(net)
    results.update(imports)
    if args.save_baseline:
        BASELINE.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
        print(f"\nbaseline written to {BASELINE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
