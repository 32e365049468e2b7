"""The ring path, step by step: where the time goes between the webhook's arrival and the accept.

The webhook answers with a ``Server-Timing`` header (shared/intake.py times each step: verify, parse,
durable_checks = the Durable existence check and live count made together, decide, admit, accept = the platform
round trip, start = the Durable ``start_new``). This bench puts a small relay between the emulator and the app that
keeps those headers, places ``--calls`` calls one at a time and then the same number within ``--within`` seconds,
and prints p50/p99 per step. The relay adds its own hop, so this is for the breakdown; bench/burst.py measures the
end-to-end latency without it. The baseline is the peer (bench/peer_webhook.py), whose ring path is: verify, accept.

    .venv/bin/python bench/ring_path.py --calls 50
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import uuid
from pathlib import Path

import httpx
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._load import goal_line, pct  # noqa: E402
from bench.burst import place_burst, stack_config, wait_ended  # noqa: E402
from localrun.stack import Stack  # noqa: E402

STEPS = ("verify", "parse", "durable_checks", "decide", "admit", "accept", "start")


async def run(stack: Stack, args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    timings: list[dict[str, float]] = []
    async with httpx.AsyncClient(timeout=30) as upstream:

        async def relay(request: web.Request) -> web.Response:
            body = await request.read()
            r = await upstream.post(stack.webhook_url, content=body, headers={
                k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")})
            server_timing = r.headers.get("server-timing", "")
            step = {}
            for part in filter(None, (p.strip() for p in server_timing.split(","))):
                name, _, dur = part.partition(";dur=")
                step[name] = float(dur)
            timings.append(step)
            return web.Response(status=r.status_code, body=r.content)

        app = web.Application()
        app.router.add_post("/", relay)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        out: dict[str, dict[str, list[float]]] = {}
        try:
            async with httpx.AsyncClient(timeout=30) as http:
                emu = stack.emulator_url
                (await http.post(f"{emu}/_emulator/config", json={"webhook_url": f"http://127.0.0.1:{port}/"}))
                for label, within in (("one at a time", None), (f"{args.calls} within {args.within:g} s", args.within)):
                    timings.clear()
                    if within is None:
                        ids = []
                        for _ in range(args.calls):
                            ids += await place_burst(http, emu, 1, 0)
                            await wait_ended(http, emu, ids[-1:], 20)
                    else:
                        ids = await place_burst(http, emu, args.calls, within)
                        await wait_ended(http, emu, ids, 60)
                    per: dict[str, list[float]] = collections.defaultdict(list)
                    for t in timings:
                        for k, v in t.items():
                            per[k].append(v)
                        per["total"].append(sum(t.values()))
                    out[label] = per
                    await asyncio.sleep(1)
        finally:
            await runner.cleanup()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--within", type=float, default=1.0)
    parser.add_argument("--azurite", action="store_true")
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    with Stack(stack_config(args, tag, {"MAX_CALLS_PER_INSTANCE": "1000"})) as stack:
        res = asyncio.run(run(stack, args))
    print("\nRing path per step (ms, app's own clock, from Server-Timing)")
    for label, per in res.items():
        print(f"  {label}:")
        for step in (*STEPS, "total"):
            if per.get(step):
                print(f"    {step:<16} p50 {pct(per[step], 50):7.2f}  p99 {pct(per[step], 99):7.2f}")
    one = res["one at a time"]
    print("Goals (issue 11, goal 4):")
    print(goal_line("Durable checks before the accept, p50 (alone)", pct(one["durable_checks"], 50), 1.0, "ms"))
    print(
        goal_line(
            "steps before the accept except it, p50 (alone)",
            pct([t - a - s for t, a, s in zip(one["total"], one["accept"], one["start"], strict=True)], 50),
            2.0,
            "ms",
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
