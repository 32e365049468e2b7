"""Webhook -> accept with a capacity limit, on an empty task hub and on one holding 100,000 finished calls.

With `capacity.max_concurrent_calls` set, every webhook counts the live calls before it answers. The count used to
page through the task hub's instances by runtime status; it now reads the live-calls table (shared/live_calls.py),
whose size follows the calls live now. This bench runs the whole local stack (Azurite, emulator, app under the
local runner) twice with a capacity rule: once on an empty task hub (the baseline) and once on a task hub seeded
directly with ``--instances`` finished `call` orchestrations (localrun/durable/seed.py), and reports the
webhook-sent -> accept-received time of ``--calls`` calls placed one after another.

For scale it also times the old count (the status query `call_workflow/call_status.py` `live_calls` makes) against
the seeded runner. The runner filters its instances in memory, so that figure is a floor: with the Azure Storage
provider the same query scans the whole Instances table (docs/architecture.md).

    .venv/bin/python bench/capacity_count.py --instances 100000 --calls 20
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from localrun.durable.seed import seed, snapshot  # noqa: E402
from localrun.durable.store import TaskHubStore  # noqa: E402
from localrun.stack import ROOT, Stack, StackConfig, http_json  # noqa: E402

SCENARIO = {"script": {"steps": [], "on_end": "hangup"}, "model": {"default_reply": "Okay."}}
GOAL_MS = 1500.0  # the count's own budget (shared/intake.py LIVE_COUNT_TIMEOUT_SECONDS); the platform wants < 10 s


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def seed_hub(hub_dir: Path, instances: int) -> float:
    t0 = time.monotonic()
    store = TaskHubStore(hub_dir / "switchboard")
    now = dt.datetime.now(dt.UTC)
    call = {"call_id": "x", "caller": "+1425***1212", "profile_name": "reception"}
    seed(store, [snapshot(f"rtc_old_{i:06d}", "call", now - dt.timedelta(days=1, seconds=i), "Completed",
                          input_value={**call, "call_id": f"rtc_old_{i:06d}"},
                          custom_status={"state": "ended"}) for i in range(instances)])
    return time.monotonic() - t0


def old_count_ms(stack: Stack) -> float:
    """The status query the webhook used to make, page by page (100 per page, no inputs)."""
    base = (
        f"{stack.app_url}/runtime/webhooks/durabletask/instances/?runtimeStatus=Running,Pending&showInput=false&top=100"
    )
    t0 = time.monotonic()
    token = None
    while True:
        req = urllib.request.Request(base, headers={"x-ms-continuation-token": token} if token else {})
        with urllib.request.urlopen(req, timeout=60) as resp:
            json.loads(resp.read())
            token = resp.headers.get("x-ms-continuation-token")
        if not token:
            break
    return (time.monotonic() - t0) * 1000


def run(calls: int, hub_dir: Path, rules: Path) -> tuple[list[float], float, float]:
    config = StackConfig(app_port=0, emulator_http_port=0, sip_port=0, azurite_ports=(0, 0, 0),
                         azurite_location=Path(tempfile.mkdtemp(prefix="bench-azurite-")), echo=False,
                         log_dir=Path(tempfile.mkdtemp(prefix="bench-logs-")), task_hub_dir=hub_dir,
                         emulator_options={"speech_seconds_per_char": 0.001},
                         app_env={"ROUTING_RULES_PATH": str(rules)}, start_timeout_s=600)
    t0 = time.monotonic()
    values = []
    with Stack(config) as stack:
        started = time.monotonic() - t0
        for i in range(calls + 1):  # the first call pays imports and connections: dropped
            status, body = http_json("POST", f"{stack.emulator_url}/_emulator/calls", {"scenario": SCENARIO})
            assert status in (200, 201), body
            deadline = time.monotonic() + 30
            while True:
                _, call = http_json("GET", f"{stack.emulator_url}/_emulator/calls/{body['call_id']}")
                ts = call.get("timestamps") or {}
                if call.get("state") == "ended" and "accept_received" in ts:
                    break
                if call.get("state") in ("rejected", "expired"):
                    raise RuntimeError(f"call {body['call_id']} was {call.get('state')}, not accepted")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"call {body['call_id']}: {call.get('state')} {sorted(ts)}")
                time.sleep(0.02)
            if i:
                values.append((ts["accept_received"] - ts["webhook_sent"]) * 1000)
        old = old_count_ms(stack)
    return values, started, old


def row(name: str, values: list[float]) -> str:
    return (f"  {name:<52} p50 {statistics.median(values):7.1f} ms  p95 {pct(values, 0.95):7.1f} ms"
            f"  max {max(values):7.1f} ms")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instances", type=int, default=100_000)
    p.add_argument("--calls", type=int, default=20)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-capacity-"))
    rules = work / "routing.json"
    data = json.loads((ROOT / "routing.json").read_text())
    data["capacity"] = {"max_concurrent_calls": 1000}
    rules.write_text(json.dumps(data))
    no_limit = work / "routing-no-limit.json"
    no_limit.write_text((ROOT / "routing.json").read_text())

    try:
        empty, empty_start, empty_old = run(args.calls, work / "empty", rules)
        seeded_in = seed_hub(work / "full", args.instances)
        full, full_start, full_old = run(args.calls, work / "full", rules)
        # Control: the same seeded hub without a capacity rule (no count at all). What is left between the two
        # seeded rows is the count; what they share is the local runner holding every instance in memory.
        uncounted, _, _ = run(args.calls, work / "full", no_limit)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # 100,000 snapshots are ~400 MB

    print(f"Webhook sent -> accept received, capacity rule on, {args.calls} calls (emulator's clock)")
    print(row("empty task hub (baseline)", empty))
    print(row(f"{args.instances:,} finished calls in the task hub", full))
    print(row(f"{args.instances:,} finished, no capacity rule (control)", uncounted))
    print(f"  goal: the count within {GOAL_MS:.0f} ms at any history size, so the accept does not grow with history")
    print(f"Old count (status query, paged) on the same runner: empty {empty_old:.1f} ms, "
          f"{args.instances:,} finished {full_old:.1f} ms (in-memory filter: a floor for Azure Storage's table scan)")
    print(f"Set-up: seeding {seeded_in:.1f} s; stack start empty {empty_start:.1f} s, seeded {full_start:.1f} s "
          f"(the runner loads every snapshot)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
