"""A burst of calls through the whole local stack, beside the platform sample's webhook server.

``--calls`` calls are placed through the emulator's control API within one second. On the emulator's clock, per
call:

- ``webhook → accept``: the signed webhook is sent until our accept arrives (the caller hears ringing);
- ``accept → greeting``: the accept until the greeting's ``response.create`` (the caller hears silence).

What the callers do after the greeting (``--mode``):

- ``hold`` (the default): each caller stays on the line, silent, for ``--hold`` seconds, then hangs up. Real calls
  last minutes, so the ends of calls do not land in the second their set-ups do; with a hold longer than the
  set-up window, the burst's set-up window holds set-up work only.
- ``hangup``: each caller hangs up as soon as the greeting has played (the bench's first form): 100 hangups,
  conversation endings and record publishes land in the same second as the set-ups and compete with them.

App CPU is the app process's CPU (from /proc, sampled every 10 ms), per call:

- ``set-up``: over the set-up window, the first webhook sent to the last greeting's ``response.create``;
- ``whole call``: from the burst's start until every call ended and, for Switchboard, every record was published.

The same burst goes, in the same run and against the same emulator, to the peer (bench/peer_webhook.py: the platform
sample's webhook server, one thread per call, no workflow, no records); rounds alternate Switchboard and peer. With
``--profile DIR`` py-spy records the app during the Switchboard bursts and the CPU is split into what would run in
the Python worker in Azure and what is the local runner's own work (the host's stand-in), for the set-up window and
for the rest of the call.

    .venv/bin/python bench/burst.py --calls 100 --rounds 2 [--mode hold|hangup] [--hold 6] [--profile bench/out]

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

from bench._load import ROOT, CpuSampler, Profiler, goal_line, pct, print_split  # noqa: E402
from localrun.stack import Stack, StackConfig, azurite_connection_string  # noqa: E402

SCENARIO = {"script": {"steps": [], "on_end": "hangup"}, "model": {"default_reply": "Okay."}}
# The profile's caller-silence timeout (routing.json: idle_timeout_ms 8000) must not fire during the hold: that would
# add a silence prompt to every call. 6 s of silence after the greeting stays under it.
DEFAULT_HOLD_SECONDS = 6.0


def scenario(mode: str, hold: float) -> dict:
    if mode == "hangup":
        return SCENARIO
    return {"script": {"steps": [{"wait": hold}], "on_end": "hangup"}, "model": {"default_reply": "Okay."}}


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


async def wait_ended(http: httpx.AsyncClient, emulator: str, call_ids: list[str], timeout: float,
                     quiet: float = 0.0) -> list[dict]:
    """The calls once each has ended (or ``timeout``). ``quiet``: no polling for that long first (the calls cannot end
    before), so the polling does not load the emulator while the calls are being set up."""
    await asyncio.sleep(quiet)
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


def setup_window(calls: list[dict]) -> tuple[float, float, float] | None:
    """(first webhook sent, last greeting's response.create, first call end) on the emulator's wall clock."""
    sent = [c["timestamps"]["webhook_sent"] for c in calls if "webhook_sent" in (c.get("timestamps") or {})]
    greeted = [c["timestamps"]["first_response_create"] for c in calls
               if "first_response_create" in (c.get("timestamps") or {})]
    ended = [c["timestamps"]["ended"] for c in calls if "ended" in (c.get("timestamps") or {})]
    if not sent or not greeted:
        return None
    return min(sent), max(greeted), min(ended, default=float("inf"))


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


async def wait_greeted(http: httpx.AsyncClient, emulator: str, call_ids: list[str], timeout: float) -> None:
    """Return soon after every call has had its greeting (or ended without one), or at ``timeout``. Looks at one
    call at a time, every 50 ms at most, so that watching costs the emulator next to nothing during the set-up."""
    deadline = time.monotonic() + timeout
    pending = list(call_ids)
    while pending and time.monotonic() < deadline:
        call = (await http.get(f"{emulator}/_emulator/calls/{pending[0]}")).json()
        if "first_response_create" in (call.get("timestamps") or {}) or call.get("state") in (
                "ended", "rejected", "expired"):
            pending.pop(0)
            continue
        await asyncio.sleep(0.05)


async def run_round(stack: Stack, peer_url: str, peer_pid: int, args: argparse.Namespace, rnd: int,
                    queue: str) -> dict:
    out: dict = {}
    app_pid = child_pid(stack, "app")
    hold = args.mode == "hold"
    async with httpx.AsyncClient(timeout=30) as http:
        emu = stack.emulator_url
        for who in ("switchboard", "peer"):
            url = stack.webhook_url if who == "switchboard" else peer_url
            (await http.post(f"{emu}/_emulator/config", json={"webhook_url": url})).raise_for_status()
            pid = app_pid if who == "switchboard" else peer_pid
            before_records = queue_count(stack.storage_connection_string, queue) if who == "switchboard" else 0
            profile = bool(args.profile) and who == "switchboard"
            prof = Profiler(app_pid, Path(args.profile) / f"burst-r{rnd}-setup.txt", args.rate) if profile else None
            split: dict = {}
            with CpuSampler(pid) as sampler, CpuSampler(child_pid(stack, "emulator"), 0.05) as emu_sampler:
                start = time.time()
                ids = await place_burst(http, emu, args.calls, args.within, scenario(args.mode, args.hold))
                if prof is not None:
                    # The set-up profile ends once every caller has been greeted; the rest of the call gets its own.
                    await wait_greeted(http, emu, ids, 60)
                    split["set-up"] = prof.stop()
                    prof = Profiler(app_pid, Path(args.profile) / f"burst-r{rnd}-rest.txt", args.rate)
                calls = await wait_ended(http, emu, ids, timeout=120 + args.hold,
                                         quiet=max(0.0, args.hold - (time.time() - start)) if hold else 0.0)
                records = None
                if who == "switchboard":
                    records = await asyncio.to_thread(wait_records, stack.storage_connection_string, queue,
                                                      before_records + args.calls, 60) - before_records
                end = time.time()
            if prof is not None:
                split["rest"] = prof.stop()
            window = setup_window(calls)
            if window is not None:
                t0, t1, first_end = window
                if hold and first_end < t1:
                    print(f"  WARNING round {rnd + 1} {who}: a call ended before the last greeting; "
                          f"raise --hold above {t1 - t0:.1f} s")
                setup_cpu = sampler.between(t0, t1)
                emu_cpu = emu_sampler.between(t0, t1)
            else:
                t0 = t1 = start
                setup_cpu = emu_cpu = float("nan")
            s = stats(calls)
            out[who] = {**s, "cpu_ms_per_call": sampler.between(start, end) * 1000 / args.calls,
                        "setup_cpu_ms_per_call": setup_cpu * 1000 / args.calls, "setup_window_s": t1 - t0,
                        "emulator_setup_cpu_s": emu_cpu,
                        "records": records, "split": split if all(split.values()) and split else None,
                        "accepted": sum(1 for c in calls if "accept_received" in (c.get("timestamps") or {}))}
            await asyncio.sleep(1.0)
    return out


def report(rounds: list[dict], args: argparse.Namespace) -> None:
    def merged(who: str, key: str) -> list[float]:
        return [v for r in rounds for v in r[who][key]]

    sb, peer = "switchboard", "peer"
    mode = (f"callers hold {args.hold:g} s after the greeting (--mode hold)" if args.mode == "hold"
            else "callers hang up after the greeting (--mode hangup)")
    print(f"\nBurst of {args.calls} calls within {args.within:g} s, {len(rounds)} round(s) each, interleaved "
          f"(emulator clock); {mode}")
    for who in (sb, peer):
        w2a, a2g = merged(who, "w2a"), merged(who, "a2g")
        setup = [r[who]["setup_cpu_ms_per_call"] for r in rounds]
        whole = [r[who]["cpu_ms_per_call"] for r in rounds]
        windows = [r[who]["setup_window_s"] for r in rounds]
        emu_cpu = [r[who]["emulator_setup_cpu_s"] for r in rounds]
        print(f"  {who:<11} webhook→accept p50 {pct(w2a, 50):7.1f} p99 {pct(w2a, 99):7.1f} ms | "
              f"accept→greeting p50 {pct(a2g, 50):7.1f} p99 {pct(a2g, 99):7.1f} ms | accepted "
              f"{sum(r[who]['accepted'] for r in rounds)} ungreeted {len(merged(who, 'ungreeted'))}"
              + (f" records {sum(r[who]['records'] or 0 for r in rounds)}" if who == sb else ""))
        print(f"  {'':<11} CPU per call: set-up {' '.join(f'{c:.1f}' for c in setup)} ms (set-up window "
              f"{' '.join(f'{w:.2f}' for w in windows)} s) | whole call {' '.join(f'{c:.1f}' for c in whole)} ms | "
              f"emulator CPU in the set-up window {' '.join(f'{c:.2f}' for c in emu_cpu)} s")
    print("Goals (issue 11, goal 1):")
    print(goal_line("webhook→accept p99", pct(merged(sb, "w2a"), 99), 20, "ms", pct(merged(peer, "w2a"), 99)))
    print(goal_line("accept→greeting p99", pct(merged(sb, "a2g"), 99), 50, "ms", pct(merged(peer, "a2g"), 99)))
    cpu_sb = min(r[sb]["setup_cpu_ms_per_call"] for r in rounds)
    cpu_peer = min(r[peer]["setup_cpu_ms_per_call"] for r in rounds)
    print(goal_line("app CPU per call set-up (best round)", cpu_sb, 5, "ms", cpu_peer))
    whole_sb = min(r[sb]["cpu_ms_per_call"] for r in rounds)
    whole_peer = min(r[peer]["cpu_ms_per_call"] for r in rounds)
    print(f"  {'app CPU per whole call (best round)':<44} {whole_sb:9.2f} ms     (no goal)            "
          f"   baseline {whole_peer:9.2f} ms")
    splits = [r[sb]["split"] for r in rounds if r[sb]["split"]]
    if splits:
        for phase, label, cpu_key in (("set-up", "set-up", "setup_cpu_ms_per_call"),
                                      ("rest", "rest of the call", None)):
            parts = [s[phase] for s in splits]
            worker = sum(p["worker"] for p in parts) / len(parts)
            host = sum(p["host"] for p in parts) / len(parts)
            if cpu_key is not None:
                cpu = sum(r[sb][cpu_key] for r in rounds) / len(rounds)
            else:
                cpu = sum(r[sb]["cpu_ms_per_call"] - r[sb]["setup_cpu_ms_per_call"] for r in rounds) / len(rounds)
            print(f"  {label} ({cpu:.2f} ms per call, mean of rounds), py-spy split:")
            print(f"    {'worker code (Azure: Python worker)':<42} {cpu * worker:9.2f} ms")
            print(f"    {'local runner (Azure: Functions host)':<42} {cpu * host:9.2f} ms")
            print(f"    {'event loop / unattributed':<42} {cpu * (1 - worker - host):9.2f} ms")
            for i, p in enumerate(parts):
                print_split(p, f"round {i + 1} {label}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--within", type=float, default=1.0, help="seconds over which the burst is spread")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--mode", choices=("hold", "hangup"), default="hold",
                        help="hold: callers stay on the line (silent) for --hold s after the greeting (default); "
                             "hangup: they hang up as soon as the greeting has played")
    parser.add_argument("--hold", type=float, default=DEFAULT_HOLD_SECONDS,
                        help="seconds a caller stays on the line after the greeting in --mode hold")
    parser.add_argument("--profile", help="folder for py-spy profiles of the app during the Switchboard bursts")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second with --profile")
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
    report(rounds, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
