"""What the local runner's task hub on disk costs, next to the in-memory engine as the baseline.

    python bench/task_hub.py            # 500 starts, resume of 1000 instances
    python bench/task_hub.py -n 2000

start_new sits on the webhook path (the intake starts the call's orchestration before answering), so its
cost with the store is the figure that matters; resume is what a restarted `make up` pays once.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import azure.durable_functions as df  # noqa: E402

from localrun.durable import DurableEngine, FunctionIndex, RealClock, TaskHubStore  # noqa: E402

app = df.DFApp()


@app.orchestration_trigger(context_name="context")
def call(context: df.DurableOrchestrationContext):
    # The shape of Switchboard's orchestrator: a long activity raced against a deadline and an event.
    data = context.get_input()
    talk = context.call_activity("converse", data)
    deadline = context.create_timer(context.current_utc_datetime.replace(year=2099))
    hangup = context.wait_for_external_event("hangup")
    yield context.task_any([talk, deadline, hangup])
    return "done"


CALL_INPUT = {"call_id": "rtc_x", "caller": "+1425***1212", "profile": {"instructions": "x" * 2000}}


async def never(_value):
    await asyncio.Event().wait()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def starts(n: int, store: TaskHubStore | None) -> list[float]:
    engine = DurableEngine(FunctionIndex.from_app(app), clock=RealClock(), activity_overrides={"converse": never},
                           store=store)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        await engine.start_new("call", f"rtc_{i}", CALL_INPUT)
        times.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(0)  # let the first episode run (and write), as between real webhooks
    await engine.aclose()
    return times


async def resume(folder: Path) -> tuple[float, int]:
    engine = DurableEngine(FunctionIndex.from_app(app), clock=RealClock(), activity_overrides={"converse": never},
                           store=TaskHubStore(folder))
    t0 = time.perf_counter()
    resumed = await engine.resume()
    elapsed = (time.perf_counter() - t0) * 1000
    await engine.aclose()
    return elapsed, len(resumed)


def line(name: str, values: list[float]) -> str:
    return (f"  {name:<28} p50 {statistics.median(values):6.3f} ms  p95 {percentile(values, 0.95):6.3f} ms"
            f"  max {max(values):6.3f} ms")


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=500, help="orchestrations started per run (default %(default)s)")
    p.add_argument("--resume", type=int, default=1000, help="instances in the hub to resume (default %(default)s)")
    args = p.parse_args()

    await starts(20, None)  # warm the SDK and the function index
    memory = await starts(args.n, None)
    with tempfile.TemporaryDirectory() as tmp:
        disk = await starts(args.n, TaskHubStore(Path(tmp) / "hub"))
    print(f"start_new ({args.n} calls):")
    print(line("in memory (baseline)", memory))
    print(line("task hub on disk", disk))
    print(f"  cost of the store: +{statistics.median(disk) - statistics.median(memory):.3f} ms p50")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "hub"
        await starts(args.resume, TaskHubStore(folder))
        size = sum(f.stat().st_size for f in folder.iterdir())
        elapsed, count = await resume(folder)
    print(f"resume after a restart: {count} running instances ({size / count / 1024:.1f} KiB each) "
          f"in {elapsed:.0f} ms ({elapsed / count:.3f} ms each)")


if __name__ == "__main__":
    asyncio.run(main())
