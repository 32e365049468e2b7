"""N live calls in one app process, beside a minimal peer, against the same emulator.

Each call: greeting, then the caller speaks every couple of seconds and asks for an order about every 5 s (the model
calls ``lookup_order``), for ``--seconds``; then the caller hangs up. Switchboard's side is the real conversation
engine (``shared.conversation.converse``: sideband, tools, turns table on Azurite, call control, and the call's
lease renewed every few seconds, unless ``--no-lease``; ``--no-storage`` leaves out both, to measure the engine
alone), run for all N calls in one child process, as the ``converse`` activities of one worker would. The peer
is the platform sample extended to answer tool calls (one coroutine per call: open the sideband, greet, answer each
function call with a fixed result; no state, no storage, no logs): the floor.

Figures, per side, in the same run (the two sides run one after the other against the same emulator):
- tool round trip (in the steady window; with the ramp-up too): the emulator sends
  ``response.function_call_arguments.done`` until the ``function_call_output`` arrives (emulator clock, so it
  includes the emulator's own queueing: its CPU is printed too);
- the app's CPU-seconds per call-minute and RSS over the steady window (after every call is up);
- calls greeted, summaries returned (Switchboard), calls that ended;
- Switchboard's storage requests per call-minute, by HTTP method (lease and turns; over the whole calls).

    .venv/bin/python bench/live_calls.py --calls 100 --seconds 40 [--profile bench/out]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._load import ROOT, Profiler, cpu_seconds, goal_line, pct, print_split, rss_mb  # noqa: E402

KEY = "bench-live-key"
CYCLE = [{"say": "Hi, where is my order 1234?", "after": 2.0}, {"say": "Okay, thanks.", "after": 2.0}]


def scenario(seconds: float) -> dict:
    cycles = max(1, int(seconds / 5))
    return {"script": {"wait_for_greeting": True, "steps": CYCLE * cycles, "on_end": "hangup"},
            "model": {"greeting": "Thank you for calling.", "default_reply": "Sure.",
                      "rules": [{"match": r"order (?P<order_id>\d+)", "regex": True, "say": "Let me look.",
                                 "call": {"name": "lookup_order", "arguments": {"order_id": "{order_id}"}}}],
                      "after_function": {"lookup_order": "Your order {order_id} is {status}."}}}


# ----------------------------------------------------------------------------------------- the app (child process)

async def _place_and_accept(http, emulator: str, body: dict, sc: dict) -> str:
    r = await http.post(f"{emulator}/_emulator/calls", json={"scenario": sc})
    r.raise_for_status()
    call_id = r.json()["call_id"]
    r = await http.post(f"{emulator}/openai/v1/realtime/calls/{call_id}/accept", json=body, headers={"api-key": KEY})
    r.raise_for_status()
    return call_id


async def _peer_call(emulator: str, call_id: str) -> None:
    import websockets

    url = emulator.replace("http://", "ws://", 1) + f"/openai/v1/realtime?call_id={call_id}"
    try:
        async with websockets.connect(url, additional_headers={"api-key": KEY}, compression=None) as ws:
            await ws.send(json.dumps({"type": "response.create"}))
            async for raw in ws:
                event = json.loads(raw)
                if event.get("type") == "response.function_call_arguments.done":
                    await ws.send(json.dumps({"type": "conversation.item.create", "item": {
                        "type": "function_call_output", "call_id": event["call_id"],
                        "output": json.dumps({"order_id": "1234", "status": "delivered"})}}))
                    await ws.send(json.dumps({"type": "response.create"}))
    except Exception:
        pass


async def app_main(args: argparse.Namespace) -> None:
    import httpx

    from call_workflow import agent_tools  # noqa: F401  (registers lookup_order)
    from shared.auth import ApiKeyAuth
    from shared.call_control import CallControlClient
    from shared.conversation import converse
    from shared.lease import CallLeases
    from shared.routing import RoutingRules
    from shared.tools import registry
    from shared.transcript import iso, utc_now
    from shared.turns import TurnStore

    rules = RoutingRules.load(str(ROOT / "routing.json"), tool_names=registry.names(), max_call_duration_seconds=900)
    profile = rules.profiles["reception"]
    schemas = [t.schema() for t in registry.for_profile(profile.tools, profile.transfer_targets or {})]
    body = profile.accept_body("gpt-realtime", schemas)
    sc = scenario(args.seconds)
    auth = ApiKeyAuth(KEY)
    control = CallControlClient(args.emulator, auth)
    writes: dict[str, int] = {}

    def count(request) -> None:  # azure-core's raw_request_hook: every storage request the engine sends
        writes[request.http_request.method] = writes.get(request.http_request.method, 0) + 1

    turns = None
    if args.mode == "switchboard" and not args.no_storage:
        turns = TurnStore.from_connection_string(args.storage, args.table, raw_request_hook=count)
    # As the converse activity runs it: with the call's lease (renewed every few seconds), unless --no-lease.
    leases = CallLeases(turns.table) if turns is not None and not args.no_lease else None
    tasks: list[asyncio.Task] = []
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=20)) as http:
        t0 = time.monotonic()
        for i in range(args.calls):
            await asyncio.sleep(max(0.0, t0 + i / args.rate - time.monotonic()))
            call_id = await _place_and_accept(http, args.emulator, body, sc)
            if args.mode == "peer":
                tasks.append(asyncio.create_task(_peer_call(args.emulator, call_id)))
            else:
                call = {"call_id": call_id, "accepted_at": iso(utc_now()), "caller": "+1425***1212",
                        "profile_name": "reception", "profile": profile.to_json(), "max_duration_seconds": 900}
                tasks.append(asyncio.create_task(converse(call, endpoint=args.emulator, auth=auth,
                                                          call_control=control, tools=registry, turns=turns,
                                                          leases=leases)))
    print("ready", flush=True)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    outcomes: dict[str, int] = {}
    for r in results:
        key = r.get("outcome", "?") if isinstance(r, dict) else f"error:{type(r).__name__}"
        outcomes[key] = outcomes.get(key, 0) + 1
    await control.aclose()
    if turns is not None:
        await turns.aclose()
    print("result " + json.dumps({"outcomes": outcomes, "storage_requests": writes}), flush=True)


# ------------------------------------------------------------------------------------------------ the driver

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_side(mode: str, args: argparse.Namespace, emulator: str, emu_pid: int, tag: str) -> dict:
    import httpx

    storage = os.environ.get("CALL_STORAGE_CONNECTION_STRING") or _azurite()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--app", "--mode", mode, "--calls", str(args.calls),
           "--seconds", str(args.seconds), "--rate", str(args.rate), "--emulator", emulator,
           "--storage", storage, "--table", f"bench{tag}turns"] + (["--no-lease"] if args.no_lease else []) \
        + (["--no-storage"] if args.no_storage else [])
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=str(ROOT))
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line.startswith("ready"):
        child.kill()
        raise RuntimeError(f"{mode} app did not start: {line!r}")
    time.sleep(2.0)  # let the last calls' greetings settle
    window = max(5.0, args.seconds - args.calls / args.rate - 6)
    prof = Profiler(child.pid, Path(args.profile) / f"live-{mode}-{args.calls}.txt") if args.profile else None
    cpu0, emu0, t0, w0 = cpu_seconds(child.pid), cpu_seconds(emu_pid), time.monotonic(), time.time()
    time.sleep(window)
    cpu1, emu1, t1, w1 = cpu_seconds(child.pid), cpu_seconds(emu_pid), time.monotonic(), time.time()
    rss = rss_mb(child.pid)
    split = prof.stop() if prof else None
    result = {}
    for line in child.stdout:
        if line.startswith("result "):
            result = json.loads(line[7:])
    child.wait(60)
    # Tool round trips and greetings, from the emulator's record of each call.
    trips, steady, greeted, ended, events, seconds = [], [], 0, 0, 0, 0.0
    with httpx.Client(timeout=60) as http:
        calls = http.get(f"{emulator}/_emulator/calls").json()
        ids = [c["call_id"] for c in calls["data"]]
        for cid in ids[-args.calls:]:
            call = http.get(f"{emulator}/_emulator/calls/{cid}").json()
            ts = call.get("timestamps") or {}
            greeted += "first_response_create" in ts
            ended += call.get("state") == "ended"
            sent = {e["event"].get("call_id"): e["t"] for e in call["server_events"]
                    if e["event"].get("type") == "response.function_call_arguments.done"}
            for e in call["client_events"]:
                item = e["event"].get("item") or {}
                if item.get("type") == "function_call_output" and item.get("call_id") in sent:
                    t_sent = sent.pop(item["call_id"])
                    trips.append((e["t"] - t_sent) * 1000)
                    if w0 <= t_sent <= w1:
                        steady.append(trips[-1])
            events += len(call["server_events"]) + len(call["client_events"])
            if "accepted" in ts and "ended" in ts:
                seconds += ts["ended"] - ts["accepted"]
    call_minutes = args.calls * (t1 - t0) / 60
    return {"trips": steady, "all_trips": trips, "cpu_per_call_min": (cpu1 - cpu0) / call_minutes, "rss": rss,
            "emu_cpu": (emu1 - emu0) / (t1 - t0), "app_cpu": (cpu1 - cpu0) / (t1 - t0), "greeted": greeted,
            "ended": ended, "outcomes": result.get("outcomes"), "split": split,
            "events_per_call_s": events / seconds if seconds else 0.0,
            # Over the whole of every call (set-up and ending included), by HTTP method.
            "storage_per_call_min": {m: round(n / (seconds / 60), 1) if seconds else 0.0
                                     for m, n in sorted((result.get("storage_requests") or {}).items())}}


def _azurite() -> str:
    from localrun.stack import azurite_connection_string

    return azurite_connection_string()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=40.0, help="length of each call")
    parser.add_argument("--rate", type=float, default=50.0, help="calls started per second")
    parser.add_argument("--profile", help="folder for py-spy raw profiles of the app process")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--no-lease", action="store_true",
                        help="drive the calls without the call lease (the form of this bench before the lease)")
    parser.add_argument("--no-storage", action="store_true",
                        help="no turns table and no lease: the engine's own work alone, to split the figure")
    parser.add_argument("--app", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="switchboard", help=argparse.SUPPRESS)
    parser.add_argument("--emulator", help=argparse.SUPPRESS)
    parser.add_argument("--storage", help=argparse.SUPPRESS)
    parser.add_argument("--table", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.app:
        asyncio.run(app_main(args))
        return 0

    port = free_port()
    emu = subprocess.Popen([sys.executable, "-m", "emulator", "--http-port", str(port), "--no-sip", "--api-key", KEY,
                            "--speech-seconds-per-char", "0.01", "--log-level", "WARNING"],
                           cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    emulator = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{emulator}/_emulator/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("emulator did not start")
            time.sleep(0.2)
        tag = uuid.uuid4().hex[:8]
        sides = ["switchboard"] + ([] if args.no_peer else ["peer"])
        res = {side: run_side(side, args, emulator, emu.pid, tag) for side in sides}
    finally:
        emu.terminate()
        emu.wait(10)

    print(f"\n{args.calls} live calls in one process, {args.seconds:.0f} s each "
          f"(emulator clock for round trips; CPU and RSS of the app process over the steady window)")
    for side, r in res.items():
        print(
            f"  {side:<11} tool round trip p50 {pct(r['trips'], 50):7.1f} p99 {pct(r['trips'], 99):7.1f} ms "
            f"(n={len(r['trips'])}; with the ramp-up p99 {pct(r['all_trips'], 99):.1f}) | "
            f"app {r['app_cpu']:.2f} CPU, {r['cpu_per_call_min']:.4f} CPU-s/call-min | "
            f"RSS {r['rss']:.0f} MB | emulator {r['emu_cpu']:.2f} CPU | greeted {r['greeted']}/{args.calls} "
            f"ended {r['ended']} | {r['events_per_call_s']:.1f} events/call-s"
            + (f" | outcomes {r['outcomes']} | storage requests per call-minute {r['storage_per_call_min']}"
               if side == "switchboard" else "")
        )
    sb, peer = res["switchboard"], res.get("peer")
    print("Goals (issue 11, goal 2):")
    print(goal_line("tool round trip p99", pct(sb["trips"], 99), 20, "ms", pct(peer["trips"], 99) if peer else None))
    print(goal_line("RSS", sb["rss"], 300, "MB", peer["rss"] if peer else None))
    print(goal_line("app CPU-s per call-minute", sb["cpu_per_call_min"], 0.04, "s",
                    peer["cpu_per_call_min"] if peer else None))
    print_split(sb["split"], "switchboard")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
