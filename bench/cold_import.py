"""Cold ``import function_app``: what a new worker pays before it can answer the first webhook.

Each sample is a fresh interpreter (``python -c``) with the settings of local.settings.example.json, so nothing is
cached in memory; the OS file cache is warm after the first run, as on a Functions instance that restarts. Two
figures: the whole import, and the import after ``azure.functions`` is loaded (the Python worker in Azure imports
``azure.functions`` itself before it loads the app, so that part is not the app's start-up cost). The baseline is
the peer (bench/peer_webhook.py's own imports: websockets and the standard library).

    .venv/bin/python bench/cold_import.py --runs 7
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._load import ROOT, goal_line  # noqa: E402

PROBE = """
import sys, time
sys.path.insert(0, {root!r})
{pre}
t = time.perf_counter()
import {module}
print(time.perf_counter() - t)
"""


def sample(module: str, pre: str, env: dict[str, str]) -> float:
    code = PROBE.format(root=str(ROOT), pre=pre, module=module)
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=str(ROOT), capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1]) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    env = dict(os.environ)
    env.update({k: v for k, v in json.loads((ROOT / "local.settings.example.json").read_text())["Values"].items()
                if v != ""})
    sys.path.insert(0, str(ROOT / "bench"))
    whole, app_only, peer = [], [], []
    for _ in range(args.runs):  # interleaved, so machine load hits all three alike
        whole.append(sample("function_app", "", env))
        app_only.append(sample("function_app", "import azure.functions", env))
        peer.append(sample("peer_webhook", f"sys.path.insert(0, {str(ROOT / 'bench')!r})", env))
    print(f"\nCold import, median of {args.runs} fresh interpreters")
    print(f"  import function_app (everything)               {statistics.median(whole):7.1f} ms")
    print("Goals (issue 11, goal 5):")
    print(goal_line("import function_app (worker has azure.functions)", statistics.median(app_only), 400, "ms",
                    statistics.median(peer)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
