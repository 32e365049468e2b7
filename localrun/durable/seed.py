"""Seeding a task hub folder directly: instances as a long-running app would have left them, without running them.

For tests and benchmarks that need history at scale (100,000 finished calls) or instances created weeks ago,
which the engine itself only produces in real time. The snapshots have the shape :class:`TaskHubStore` writes,
so the engine restores them like any other.
"""
from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from . import history as h
from .engine import ACTIVE_STATES
from .store import TaskHubStore


def snapshot(instance_id: str, name: str, created: dt.datetime, status: str, input_value: Any = None,
             custom_status: Any = None, output: Any = None) -> dict[str, Any]:
    """An instance snapshot. A finished one carries a complete (started, completed) history; a Pending/Running one
    an empty inbox and history, so it stays as it is until something is raised into it."""
    input_json = None if input_value is None else json.dumps(input_value)
    history: list[dict] = []
    if status not in ACTIVE_STATES:
        history = [h.orchestrator_started(created),
                   h.execution_started(created, name, input_json, instance_id, uuid.uuid4().hex),
                   h.execution_completed(created, status, None if output is None else json.dumps(output)),
                   h.orchestrator_completed(created)]
        for e in history:
            e["IsPlayed"] = True
    return {"instance_id": instance_id, "name": name, "input_json": input_json, "execution_id": uuid.uuid4().hex,
            "created": h.format_ts(created), "last_updated": h.format_ts(created), "status": status,
            "custom_status": custom_status, "output": output, "history": history, "committed": [],
            "next_id": 0, "retries": [], "inbox": [], "episodes": 1}


def seed(store: TaskHubStore, snapshots: list[dict[str, Any]]) -> None:
    for snap in snapshots:
        store.save(snap["instance_id"], snap)
