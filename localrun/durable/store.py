"""The task hub on disk: one JSON document per orchestration instance.

Azure keeps orchestration state in the task hub (Azure Storage tables and queues), so a host that dies
mid-call replays its orchestrations on another worker. The local runner gets the same property from a
folder: the engine writes an instance's snapshot whenever its state changes (start, raised event,
termination, each episode) and reads them all back when it starts.

Each write goes to a temporary file that then replaces the old one, so a process killed mid-write
leaves the previous snapshot intact. There is no fsync: the failure the runner must survive is its own
process dying, and the page cache outlives that. The files hold call inputs and transcripts (what Azure
keeps in the task hub too), so they are readable by their owner only.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

log = logging.getLogger("localrun.durable")

SNAPSHOT_VERSION = 1
_SUFFIX = ".json"


class TaskHubStore:
    """Snapshots of instances in ``directory`` (created with mode 0700 if missing)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, instance_id: str) -> Path:
        # Instance ids are caller-chosen strings; quoting keeps "/" and ".." out of the path.
        return self.directory / (quote(instance_id, safe="") + _SUFFIX)

    def save(self, instance_id: str, snapshot: dict[str, Any]) -> None:
        data = json.dumps({"version": SNAPSHOT_VERSION, **snapshot}, separators=(",", ":")).encode()
        path = self._path(instance_id)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def delete(self, instance_id: str) -> None:
        self._path(instance_id).unlink(missing_ok=True)

    def load_all(self) -> list[dict[str, Any]]:
        """Every readable snapshot, oldest first. An unreadable one is logged and skipped, not fatal:
        one bad file must not keep every other call from resuming."""
        snapshots = []
        for path in sorted(self.directory.glob("*" + _SUFFIX)):
            try:
                snap = json.loads(path.read_bytes())
                if snap.get("version") != SNAPSHOT_VERSION:
                    raise ValueError(f"snapshot version {snap.get('version')!r}, expected {SNAPSHOT_VERSION}")
                if snap.get("instance_id") != unquote(path.name[: -len(_SUFFIX)]):
                    raise ValueError("instance id does not match the file name")
            except (OSError, ValueError) as exc:
                log.error("task hub: skipping %s: %s", path.name, exc)
                continue
            snapshots.append(snap)
        snapshots.sort(key=lambda s: s.get("created", ""))
        return snapshots
