"""Helpers shared by the load benchmarks (burst.py, live_calls.py, overload.py): process CPU and memory from
/proc, percentiles, py-spy profiles split into worker and host work, and the goal lines."""

from __future__ import annotations

import bisect
import collections
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parent.parent


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (its threads included), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class CpuSampler:
    """The CPU seconds of a process sampled every ``interval`` s against the wall clock (the emulator's clock is
    the wall clock), so the CPU spent between any two emulator timestamps can be read afterwards."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.pid = pid
        self.interval = interval
        self.times: list[float] = []
        self.cpu: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"cpu-{pid}", daemon=True)

    def __enter__(self) -> CpuSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        self.times.append(time.time())
        self.cpu.append(cpu_seconds(self.pid))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def at(self, t: float) -> float:
        """CPU seconds at wall time ``t``, interpolated between the samples around it (clamped at the ends)."""
        i = bisect.bisect_left(self.times, t)
        if i <= 0:
            return self.cpu[0]
        if i >= len(self.times):
            return self.cpu[-1]
        t0, t1, c0, c1 = self.times[i - 1], self.times[i], self.cpu[i - 1], self.cpu[i]
        return c0 + (c1 - c0) * ((t - t0) / (t1 - t0) if t1 > t0 else 1.0)

    def between(self, t0: float, t1: float) -> float:
        return self.at(t1) - self.at(t0)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def goal_line(name: str, value: float, goal: float, unit: str, baseline: float | None = None,
              lower_is_better: bool = True) -> str:
    ok = value <= goal if lower_is_better else value >= goal
    base = f"   baseline {baseline:9.2f} {unit}" if baseline is not None else ""
    return f"  {name:<44} {value:9.2f} {unit:<6} goal {'≤' if lower_is_better else '≥'} {goal:g} {unit:<6} " \
           f"{'MET ' if ok else 'MISS'}{base}"


class Profiler:
    """py-spy recording one process while a phase runs (``--profile DIR``); off when py-spy is missing."""

    def __init__(self, pid: int, out: Path, rate: int = 100) -> None:
        self.out = out
        self.proc: subprocess.Popen | None = None
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(spy).exists():
            print("  (py-spy not installed: no profile; pip install py-spy)")
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
                                      "--nonblocking", "-o", str(out)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> dict[str, float] | None:
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None
        if not self.out.exists():
            return None
        return split_profile(self.out)


# Frames of code that runs in the Python worker in Azure: our function code and the Durable SDK (the worker
# runs the orchestrator's replay and the client's HTTP calls). Everything else in the runner process is the local
# runner's stand-in for the Functions host and the Durable Task extension (HTTP serving, history, dispatch).
# py-spy names frames "function (package/module.py:line)". Executor threads run aiohttp's per-request environment
# lookups for the storage clients: worker work too.
_WORKER = ("(call_workflow/", "(shared/", "(durable_functions/", "(azure/", "(tables/", "(storage/", "(core/",
           "(websockets/", "(httpx/", "(httpcore/", "(function_app.py", "(concurrent/futures/thread.py")
_HOST = ("(localrun/", "(aiohttp/web")
_LOOP_CALLBACK = "Handle._run (asyncio/events.py"


def split_profile(path: Path) -> dict[str, float]:
    """Share of samples per side, and the top self-frames, from a py-spy raw (collapsed) profile.

    A sample counts as worker work when its innermost frame that belongs to either side is worker code (so
    aiohttp's client under the SDK counts as worker, and the runner's aiohttp server as host)."""
    worker = host = other = 0
    leaves: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        # Only what runs inside an event-loop callback is attributed; the runner's start-up frames are above it.
        cut = max((i for i, f in enumerate(frames) if f.startswith(_LOOP_CALLBACK)), default=-1)
        side = None
        for frame in reversed(frames[cut + 1:] if cut >= 0 else frames):
            if any(m in frame for m in _HOST):
                side = "host"
                break
            if any(m in frame for m in _WORKER):
                side = "worker"
                break
        if side == "worker":
            worker += n
        elif side == "host":
            host += n
        else:
            other += n
        leaves[frames[-1][:110]] += n
    total = worker + host + other or 1
    top = leaves.most_common(8)
    return {"worker": worker / total, "host": host / total, "other": other / total, "samples": total,
            "top": top}  # type: ignore[dict-item]


def print_split(split: dict | None, label: str) -> None:
    if not split:
        return
    print(f"  py-spy {label}: {split['samples']} samples; worker code {split['worker']:.0%}, "
          f"local runner (host stand-in) {split['host']:.0%}, event loop/other {split['other']:.0%}")
    for frame, n in split["top"][:5]:
        print(f"      {n / split['samples']:5.1%}  {frame}")
