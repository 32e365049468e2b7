"""Overload: ``--factor`` times the instance's capacity rings within a few seconds, through the whole local stack.

The app runs with ``MAX_CALLS_PER_INSTANCE=--capacity``; every call lasts ``--seconds`` (greeting, the caller waits,
says goodbye, the agent hangs up). Counted from the emulator and the records queue: calls accepted, greeted, hung
up by the agent and with exactly one record; calls refused (and with which SIP code); accepted calls left silent
or without a record (both must be zero).

    .venv/bin/python bench/overload.py --capacity 80 --factor 3
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.burst import place_burst, stack_config, wait_ended  # noqa: E402
from localrun.demo import every_call_record  # noqa: E402
from localrun.stack import Stack  # noqa: E402


def scenario(seconds: float) -> dict:
    return {"script": {"wait_for_greeting": True, "steps": [{"wait": seconds}, {"say": "Thanks, goodbye!"}],
                       "on_end": "stay"},
            "model": {"greeting": "Hello.", "default_reply": "Okay.",
                      "rules": [{"match": "goodbye", "say": "Goodbye!",
                                 "call": {"name": "end_call", "arguments": {"reason": "caller said goodbye"}}}]}}


def count_records(conn: str, queue: str) -> collections.Counter:
    return collections.Counter(r.get("call_id") for r in every_call_record(conn, queue))


async def drive(stack: Stack, args: argparse.Namespace) -> list[dict]:
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=50)) as http:
        ids = await place_burst(http, stack.emulator_url, args.capacity * args.factor, args.within,
                                scenario(args.seconds))
        return await wait_ended(http, stack.emulator_url, ids, timeout=args.seconds + 120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capacity", type=int, default=80)
    parser.add_argument("--factor", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--within", type=float, default=3.0)
    parser.add_argument("--azurite", action="store_true")
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    queue = f"bench-{tag}-records"
    with Stack(stack_config(args, tag, {"MAX_CALLS_PER_INSTANCE": str(args.capacity)})) as stack:
        calls = asyncio.run(drive(stack, args))
        accepted = [c for c in calls if "accepted" in c["timestamps"]]
        wanted = {c["call_id"] for c in accepted}
        seen: collections.Counter = collections.Counter()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not wanted <= set(seen):
            seen.update(count_records(stack.storage_connection_string, queue))
            time.sleep(0.5)
        time.sleep(2)
        seen.update(count_records(stack.storage_connection_string, queue))
    refused = collections.Counter(c.get("reject_status") for c in calls if c["state"] == "rejected")
    silent = [c for c in accepted if "first_response_create" not in c["timestamps"]]
    not_hung_up = [c for c in accepted if c.get("ended_reason") != "hangup"]
    one_record = sum(1 for c in wanted if seen[c] == 1)
    n = len(calls)
    print(f"\nOverload: {n} calls ({args.factor}x MAX_CALLS_PER_INSTANCE={args.capacity}) within {args.within:g} s, "
          f"{args.seconds:g} s each")
    print(f"  accepted {len(accepted)}, refused {sum(refused.values())} (SIP {dict(refused)}), "
          f"other {n - len(accepted) - sum(refused.values())}")
    print("Goals (issue 11, goal 3):")
    print(f"  {'accepted calls greeted':<44} {len(accepted) - len(silent):5d} / {len(accepted):<5d} "
          f"{'MET ' if not silent else 'MISS'}")
    print(f"  {'accepted calls hung up by the agent':<44} {len(accepted) - len(not_hung_up):5d} / {len(accepted):<5d} "
          f"{'MET ' if not not_hung_up else 'MISS'}")
    print(f"  {'accepted calls with exactly one record':<44} {one_record:5d} / {len(accepted):<5d} "
          f"{'MET ' if one_record == len(accepted) else 'MISS'}")
    extra = {c: k for c, k in seen.items() if c not in wanted}
    print(
        f"  {'records of calls that were not accepted':<44} {len(extra):5d}         {'MET ' if not extra else 'MISS'}"
    )
    print(f"  {'refused with a busy code (486)':<44} {refused.get(486, 0):5d} / {n - len(accepted):<5d} "
          f"{'MET ' if refused.get(486, 0) == n - len(accepted) else 'MISS'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
