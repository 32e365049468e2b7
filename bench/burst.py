"""A burst of calls through the whole local stack, beside the platform sample's webhook server.

``--calls`` calls are placed through the emulator's control API within one second. Each caller hears the greeting
and hangs up. On the emulator's clock, per call:

- ``webhook → accept``: the signed webhook is sent until our accept arrives (the caller hears ringing);
- ``accept → greeting``: the accept until the greeting's ``response.create`` (the caller hears silence).

App CPU per call is the app process's CPU over the burst (until every call ended and, for Switchboard, every
record was published) divided by the number of calls. The same burst goes, in the same run and against the same
emulator, to the peer (bench/peer_webhook.py: the platform sample's webhook server, one thread per call, no
workflow, no records); rounds alternate Switchboard and peer.

    .venv/bin/python bench/burst.py --calls 100 --rounds 2 [--profile bench/out]

Needs Azurite on 127.0.0.1:10000-10002 (``make bench`` starts it) or ``--azurite``.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._load import ROOT, Profiler, cpu_seconds, goal_line, pct, print_split  # noqa: E402
from localrun.stack import Stack, StackConfig, azurite_connection_string  # noqa: E402

SCENARIO = {"script": {"steps": [], "on_end": "hangup"}, "model": {"default_reply": "Okay."}}


def stack_config(args: argparse.Namespace, tag: str, app_env: dict[str, str] | None = None) -> StackConfig:
    env = {"CALL_TURNS_TABLE": f"bench{tag}turns", "CALL_RECORDS_QUEUE": f"bench-{tag}-records"}
    env.update(app_env or {})
    return StackConfig(app_port=0, emulator_http_port=0, sip_port=0, start_azurite=args.azurite,
                       azurite_ports=(0, 0, 0) if args.azurite else (10000, 10001, 10002),
                       azurite_location=Path(tempfile.mkdtemp(prefix="bench-azurite-")) if args.azurite else None,
                       storage_connection_string=None if args.azurite else azurite_connection_string(),
                       echo=False, log_dir=Path(tempfile.mkdtemp(prefix="bench-logs-")),
                       emulator_options={"speech_seconds_per_char": 0.001}, app_env=env)


def child_pid(stack: Stack, name: str) -> int:
    return next(ch.proc.pid for ch in stack.children if ch.name == name)


async def place_burst(http: httpx.AsyncClient, emulator: str, calls: int, within: float,
                      scenario: dict = SCENARIO) -> list[str]:
    t0 = time.monotonic()

    async def one(i: int) -> str:
        await asyncio.sleep(max(0.0, t0 + i * within / calls - time.monotonic()))
        r = await http.post(f"{emulator}/_emulator/calls", json={"scenario": scenario})
        r.raise_for_status()
        return r.json()["call_id"]

    return await asyncio.gather(*(one(i) for i in range(calls)))


async def wait_ended(http: httpx.AsyncClient, emulator: str, call_ids: list[str], timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    pending = set(call_ids)
    calls: dict[str, dict] = {}
    while pending and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        for cid in list(pending):
            call = (await http.get(f"{emulator}/_emulator/calls/{cid}")).json()
            if call.get("state") in ("ended", "rejected", "expired"):
                calls[cid] = call
                pending.discard(cid)
    for cid in pending:
        calls[cid] = (await http.get(f"{emulator}/_emulator/calls/{cid}")).json()
    return [calls[c] for c in call_ids]


def queue_count(conn: str, queue: str) -> int:
    from azure.storage.queue import QueueClient

    with QueueClient.from_connection_string(conn, queue) as q:
        try:
            return q.get_queue_properties().approximate_message_count
        except Exception:
            return 0


def wait_records(conn: str, queue: str, n: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        count = queue_count(conn, queue)
        if count >= n:
            break
        time.sleep(0.3)
    return count


def stats(calls: list[dict]) -> dict[str, list[float]]:
    w2a, a2g = [], []
    for c in calls:
        ts = c.get("timestamps") or {}
        if "webhook_sent" in ts and "accept_received" in ts:
            w2a.append((ts["accept_received"] - ts["webhook_sent"]) * 1000)
        if "accept_received" in ts and "first_response_create" in ts:
            a2g.append((ts["first_response_create"] - ts["accept_received"]) * 1000)
    return {"w2a": w2a, "a2g": a2g,
            "ungreeted": [1.0 for c in calls if "accept_received" in (c.get("timestamps") or {})
                          and "first_response_create" not in (c.get("timestamps") or {})]}


async def run_round(stack: Stack, peer_url: str, peer_pid: int, args: argparse.Namespace, rnd: int,
                    queue: str) -> dict:
    out: dict = {}
    app_pid = child_pid(stack, "app")
    async with httpx.AsyncClient(timeout=30) as http:
        emu = stack.emulator_url
        for who in ("switchboard", "peer"):
            url = stack.webhook_url if who == "switchboard" else peer_url
            (await http.post(f"{emu}/_emulator/config", json={"webhook_url": url})).raise_for_status()
            pid = app_pid if who == "switchboard" else peer_pid
            before_records = queue_count(stack.storage_connection_string, queue) if who == "switchboard" else 0
            prof = None
            if args.profile and who == "switchboard":
                prof = Profiler(app_pid, Path(args.profile) / f"burst-r{rnd}.txt")
            cpu0 = cpu_seconds(pid)
            ids = await place_burst(http, emu, args.calls, args.within)
            calls = await wait_ended(http, emu, ids, timeout=120)
            records = None
            if who == "switchboard":
                records = await asyncio.to_thread(wait_records, stack.storage_connection_string, queue,
                                                  before_records + args.calls, 60) - before_records
            cpu = cpu_seconds(pid) - cpu0
            split = prof.stop() if prof else None
            s = stats(calls)
            out[who] = {**s, "cpu_ms_per_call": cpu * 1000 / args.calls, "records": records, "split": split,
                        "accepted": sum(1 for c in calls if "accept_received" in (c.get("timestamps") or {}))}
            await asyncio.sleep(1.0)
    return out


def report(rounds: list[dict], calls: int) -> None:
    def merged(who: str, key: str) -> list[float]:
        return [v for r in rounds for v in r[who][key]]

    sb, peer = "switchboard", "peer"
    print(f"\nBurst of {calls} calls within 1 s, {len(rounds)} round(s) each, interleaved (emulator clock)")
    for who in (sb, peer):
        w2a, a2g = merged(who, "w2a"), merged(who, "a2g")
        cpu = [r[who]["cpu_ms_per_call"] for r in rounds]
        print(f"  {who:<11} webhook→accept p50 {pct(w2a, 50):7.1f} p99 {pct(w2a, 99):7.1f} ms | "
              f"accept→greeting p50 {pct(a2g, 50):7.1f} p99 {pct(a2g, 99):7.1f} ms | "
              f"CPU/call {' '.join(f'{c:.1f}' for c in cpu)} ms | accepted {sum(r[who]['accepted'] for r in rounds)}"
              f" ungreeted {len(merged(who, 'ungreeted'))}"
              + (f" records {sum(r[who]['records'] or 0 for r in rounds)}" if who == sb else ""))
    print("Goals (issue 11, goal 1):")
    print(goal_line("webhook→accept p99", pct(merged(sb, "w2a"), 99), 20, "ms", pct(merged(peer, "w2a"), 99)))
    print(goal_line("accept→greeting p99", pct(merged(sb, "a2g"), 99), 50, "ms", pct(merged(peer, "a2g"), 99)))
    cpu_sb = min(r[sb]["cpu_ms_per_call"] for r in rounds)
    cpu_peer = min(r[peer]["cpu_ms_per_call"] for r in rounds)
    print(goal_line("app CPU per call (best round)", cpu_sb, 5, "ms", cpu_peer))
    splits = [r[sb]["split"] for r in rounds if r[sb]["split"]]
    if splits:
        worker = sum(s["worker"] for s in splits) / len(splits)
        host = sum(s["host"] for s in splits) / len(splits)
        other = 1 - worker - host
        print(goal_line("  of which worker code (Azure: Python worker)", cpu_sb * worker, 5, "ms"))
        print(goal_line("  of which local runner (Azure: host)", cpu_sb * host, 5, "ms"))
        print(f"  {'  of which event loop / unattributed':<44} {cpu_sb * other:9.2f} ms")
        for i, s in enumerate(splits):
            print_split(s, f"round {i + 1}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--within", type=float, default=1.0, help="seconds over which the burst is spread")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", help="folder for py-spy raw profiles of the app during the Switchboard bursts")
    parser.add_argument("--azurite", action="store_true", help="start a private Azurite instead of the shared one")
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    # The burst measures set-up speed: no admission limit (bench/overload.py measures that).
    with Stack(stack_config(args, tag, {"MAX_CALLS_PER_INSTANCE": "1000"})) as stack:
        peer = subprocess.Popen([sys.executable, str(ROOT / "bench" / "peer_webhook.py"), "--port", "0",
                                 "--secret", stack.webhook_secret, "--api-key", stack.api_key,
                                 "--emulator", stack.emulator_url], stdout=subprocess.PIPE, text=True)
        try:
            port = int(peer.stdout.readline().split()[1])
            peer_url = f"http://127.0.0.1:{port}/"
            rounds = [asyncio.run(run_round(stack, peer_url, peer.pid, args, i, f"bench-{tag}-records"))
                      for i in range(args.rounds)]
        finally:
            peer.terminate()
            peer.wait(10)
    report(rounds, args.calls)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
