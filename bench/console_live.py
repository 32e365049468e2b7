"""The operator console's live view under N live calls: how long one refresh takes, beside the operator API.

The page polls ``GET /console/live`` every second; each answer lists the live orchestrations and reads every
live call's turns (its last three). The baseline in the same run is the operator API's ``GET /api/calls`` (the
same listing, reading turns only for calls whose custom status lacks a last turn). Also: the page's weight, and one
history page (25 rows) and the chart figures over the calls the run made.

    .venv/bin/python bench/console_live.py --calls 20 --requests 40
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._load import ROOT, goal_line, pct  # noqa: E402
from localrun.stack import Stack, StackConfig, http_json  # noqa: E402

SCENARIOS = ROOT / "tests" / "console" / "scenarios"


def timed(url: str, key: str, n: int) -> tuple[list[float], object]:
    times, body = [], None
    for _ in range(n):
        start = time.perf_counter()
        status, body = http_json("GET", url, headers={"x-functions-key": key})
        times.append((time.perf_counter() - start) * 1000)
        assert status == 200, (status, body)
    return times, body


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--requests", type=int, default=40)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-console-"))
    stack = Stack(StackConfig(
        app_port=0, emulator_http_port=0, sip_port=0, azurite_ports=(0, 0, 0), azurite_location=tmp / "azurite",
        scenario_dir=SCENARIOS, use_func=False, echo=False, log_dir=tmp / "logs",
        emulator_options={"speech_seconds_per_char": 0.01},
        app_env={"CALL_RECORDS_QUEUE": "b" + secrets.token_hex(5)}))
    stack.start()
    try:
        key, app = stack.function_key, stack.app_url
        ids = []
        for i in range(args.calls):
            status, body = http_json("POST", f"{stack.emulator_url}/_emulator/calls",
                                     {"scenario": "console_long", "caller": f"+1425555{i:04d}",
                                      "dialed": "+18005551212"})
            ids.append(body["call_id"])
        deadline = time.monotonic() + 60
        while True:
            _, live = http_json("GET", f"{app}/console/live", headers={"x-functions-key": key})
            with_turns = [c for c in live["calls"] if c["call_id"] in ids and c.get("last_turns")]
            if len(with_turns) == len(ids) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        print(f"{len(with_turns)} of {args.calls} calls live with turns; {args.requests} requests each, in turn")
        base, _ = timed(f"{app}/api/calls", key, args.requests)
        console, body = timed(f"{app}/console/live", key, args.requests)
        size = len(json.dumps(body))
        print(goal_line("GET /console/live p50", pct(console, 50), 250, "ms", pct(base, 50)))
        print(goal_line("GET /console/live p95", pct(console, 95), 500, "ms", pct(base, 95)))
        print(f"  (baseline: GET /api/calls, the operator API; live answer {size / 1024:.1f} KiB)")
        for call_id in ids:  # end them, so their records land in the history
            http_json("POST", f"{stack.emulator_url}/_emulator/calls/{call_id}/hangup")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            _, hist = http_json("GET", f"{app}/console/history?limit=100", headers={"x-functions-key": key})
            if len(hist["calls"]) >= len(ids):
                break
            time.sleep(0.5)
        history, _ = timed(f"{app}/console/history?limit=25", key, 10)
        stats, _ = timed(f"{app}/console/stats", key, 10)
        print(goal_line("GET /console/history (25 rows) p50", pct(history, 50), 250, "ms"))
        print(goal_line("GET /console/stats p50", pct(stats, 50), 500, "ms"))
        static = ROOT / "call_workflow" / "console_static"
        weight = sum(p.stat().st_size for p in static.iterdir()) / 1024
        print(goal_line("page weight (html + js + css, uncompressed)", weight, 60, "KiB"))
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
