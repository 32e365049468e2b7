"""What one live call costs the Functions instance that runs its `converse` activity: CPU-seconds per call-minute
and memory per call, to size `maxConcurrentActivityFunctions`, the instance memory and the always-ready count
(docs/deploy.md, "Calls per instance").

The emulator runs in its own process (its CPU is not ours); this process runs N concurrent calls through the real
`shared.conversation.converse` with the app's tool registry (lookup_order) and the turns table on Azurite, as the
activity does. Each call follows a script of regular caller speech: a question every few seconds, every other one
answered with a tool call, for ``--minutes``. We measure this process's CPU time (getrusage) and RSS
(/proc/self/status) with ``--low`` calls and then ``--high`` calls in the same run: the difference between the two
is the per-call cost, with the process's own baseline (interpreter, imports, clients) taken out.

    .venv/bin/python bench/converse_capacity.py --low 5 --high 40 --minutes 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import call_workflow.agent_tools  # noqa: E402,F401  (registers lookup_order, as the app does)
from shared.auth import ApiKeyAuth  # noqa: E402
from shared.call_control import CallControlClient  # noqa: E402
from shared.conversation import converse  # noqa: E402
from shared.routing import RoutingRules  # noqa: E402
from shared.tools import registry  # noqa: E402
from shared.transcript import iso, utc_now  # noqa: E402
from shared.turns import TurnStore  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key"
AZURITE = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUz"
           "FT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;")
PROFILE = json.loads((ROOT / "routing.json").read_text())["profiles"]["reception"]
# The accept body the intake sends for the reception profile (tools, transcription, turn detection).
_RECEPTION = RoutingRules.load(ROOT / "routing.json", tool_names=registry.names(),
                               max_call_duration_seconds=900).profiles["reception"]
ACCEPT_BODY = _RECEPTION.accept_body("gpt-realtime", [
    t.schema() for t in registry.for_profile(_RECEPTION.tools, _RECEPTION.transfer_targets or {})])
# host.json's calls per instance, checked against the goal: at that many calls, with a 5x allowance for what the
# emulator leaves out (TLS, finer event streams, the host), one vCPU stays at most half busy (docs/deploy.md).
SLOTS = json.loads((ROOT / "host.json").read_text())["extensions"]["durableTask"]["maxConcurrentActivityFunctions"]
ALLOWANCE = 5
GOAL_CPU_SHARE = 0.5


def scenario(minutes: float) -> dict:
    """Regular caller speech for `minutes`: a line every ~6 s, every other one a tool call, then goodbye."""
    lines = max(2, int(minutes * 60 / 6))
    steps = []
    for i in range(lines):
        text = f"Where is my order {1000 + i}?" if i % 2 == 0 else "Okay, and what else can you tell me about it?"
        steps.append({"say": text, "after": 2.0})
    steps.append({"say": "Thanks, that's all. Goodbye!", "after": 1.0})
    return {"script": {"wait_for_greeting": True, "steps": steps, "on_end": "hangup"},
            "model": {"greeting": PROFILE["greeting"], "default_reply": "Sure, I can help with that order.",
                      "rules": [{"match": r"order (?P<order_id>\d+)", "regex": True,
                                 "say": "Let me look up order {order_id}.",
                                 "call": {"name": "lookup_order", "arguments": {"order_id": "{order_id}"}}},
                                {"match": "goodbye", "say": "Thanks for calling. Goodbye!",
                                 "call": {"name": "end_call", "arguments": {"reason": "caller said goodbye"}}}],
                      "after_function": {"lookup_order": "Your order {order_id} is {status}."}}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def http(method: str, url: str, body: object = None) -> dict:
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", "api-key": KEY})
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
    return json.loads(raw) if raw.strip() else {}


async def run_calls(n: int, minutes: float, base: str, turns: TurnStore) -> dict:
    auth = ApiKeyAuth(KEY)
    control = CallControlClient(base, auth)
    peak = [rss_mb()]
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb())
            await asyncio.sleep(0.5)

    async def one(i: int) -> dict:
        await asyncio.sleep(i * 0.1)  # a ramp, not one burst: steady-state cost is what we want
        created = await asyncio.to_thread(http, "POST", f"{base}/_emulator/calls", {"scenario": scenario(minutes)})
        call_id = created["call_id"]
        await asyncio.to_thread(http, "POST", f"{base}/openai/v1/realtime/calls/{call_id}/accept", ACCEPT_BODY)
        call = {"call_id": call_id, "accepted_at": iso(utc_now()), "profile": PROFILE, "max_duration_seconds": 900}
        return await converse(call, endpoint=base, auth=auth, call_control=control, tools=registry, turns=turns)

    sampler = asyncio.create_task(sample())
    cpu0, t0, rss0 = cpu_s(), time.monotonic(), rss_mb()
    try:
        summaries = await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        done.set()
        await sampler
        await control.aclose()
    cpu, wall = cpu_s() - cpu0, time.monotonic() - t0
    call_minutes = sum(s.get("duration_seconds") or 0 for s in summaries) / 60
    tools = sum(len(s.get("tools") or []) for s in summaries)
    outcomes = sorted({s.get("outcome") for s in summaries})
    return {"n": n, "cpu": cpu, "wall": wall, "call_minutes": call_minutes, "rss_start": rss0, "rss_peak": peak[0],
            "tools": tools, "outcomes": outcomes}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--low", type=int, default=5, help="calls in the baseline run (default 5)")
    p.add_argument("--high", type=int, default=40, help="calls in the measured run (default 40)")
    p.add_argument("--minutes", type=float, default=1.0, help="length of each call (default 1)")
    args = p.parse_args()

    port = free_port()
    emulator = subprocess.Popen(
        [sys.executable, "-m", "emulator", "--http-port", str(port), "--no-sip", "--api-key", KEY, "--mode", "azure",
         "--webhook-url", "http://127.0.0.1:9/unused", "--webhook-secret", "whsec_" + secrets.token_hex(24),
         "--speech-seconds-per-char", "0.06", "--log-level", "WARNING"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/_emulator/health", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        turns = TurnStore.from_connection_string(AZURITE, "bench" + secrets.token_hex(6))

        async def both() -> tuple[dict, dict]:
            try:
                low = await run_calls(args.low, args.minutes, base, turns)
                high = await run_calls(args.high, args.minutes, base, turns)
                return low, high
            finally:
                await turns.aclose()

        low, high = asyncio.run(both())
    finally:
        emulator.terminate()
        emulator.wait(10)

    print(f"converse cost on this machine ({os.cpu_count()} cores shared; Python {sys.version.split()[0]}), "
          f"{args.minutes:g}-minute calls, regular speech + a tool call every ~12 s")
    for r in (low, high):
        print(
            f"  {r['n']:3d} concurrent calls: {r['call_minutes']:6.1f} call-minutes in {r['wall']:5.1f} s wall, "
            f"CPU {r['cpu']:6.2f} s -> {r['cpu'] / max(r['call_minutes'], 1e-9):.3f} CPU-s per call-minute; "
            f"RSS {r['rss_start']:.0f} -> peak {r['rss_peak']:.0f} MB; {r['tools']} tool calls; "
            f"outcomes {r['outcomes']}"
        )
    per_min = (high["cpu"] - low["cpu"]) / max(high["call_minutes"] - low["call_minutes"], 1e-9)
    per_call_mb = (high["rss_peak"] - low["rss_peak"]) / max(high["n"] - low["n"], 1)
    duty = per_min / 60  # the share of one vCPU a live call keeps busy
    print(f"Per call (the {args.high}-call run minus the {args.low}-call baseline):")
    print(f"  CPU: {per_min:.3f} CPU-s per call-minute = {duty * 100:.2f} % of one vCPU per live call")
    print(f"  memory: {per_call_mb:.2f} MB per live call (process baseline {low['rss_start']:.0f} MB)")
    share = SLOTS * duty * ALLOWANCE
    print(f"  at host.json's {SLOTS} calls per instance (1 vCPU at 2048 MB): {SLOTS * duty * 100:.1f} % of the vCPU "
          f"measured, {share * 100:.0f} % with the {ALLOWANCE}x allowance (goal <= {GOAL_CPU_SHARE * 100:.0f} %)"
          f"{'' if share <= GOAL_CPU_SHARE else '  <-- OVER GOAL'}")
    print(
        f"  memory at {SLOTS} calls: {SLOTS * per_call_mb:.0f} MB measured "
        f"(budget 4 MB per call: {SLOTS * 4} MB of 2048)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
