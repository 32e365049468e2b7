"""Two process-wide speed-ups of the Durable SDK's replay, which runs in the Python worker on every episode of
every orchestration (docs/performance.md, "Replay").

- History timestamps: the SDK parses each history event's ``Timestamp`` with ``dateutil.parser.parse``, on every
  replay of the whole history; at a burst of calls that was about 6 % of the app's CPU. The ISO 8601 form the
  host sends is parsed here with ``datetime.fromisoformat`` instead (the Durable Task Framework writes seven
  fraction digits; dateutil keeps the first six, and so does this). Anything else still goes to dateutil, so the
  values are the same instants dateutil would give.
- ``TaskOrchestrationExecutor.__init__`` builds a ``namedtuple`` class on every replay (about 0.3 ms each); the
  class is the same every time, so it is made once.

Both patch module globals of azure-functions-durable 1.x (``HistoryEvent.dt_parse``,
``TaskOrchestrationExecutor.namedtuple``); if a later SDK drops those names, nothing is patched and the SDK runs as
it is.
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import importlib
from typing import Any

from dateutil.parser import parse as _dateutil_parse


def parse_timestamp(value: Any) -> dt.datetime:
    """``dateutil.parser.parse`` for history timestamps, fast for the ISO form with a zone (``...Z``)."""
    if isinstance(value, str) and len(value) >= 20 and value[10:11] == "T":
        text = value[:-1] + "+00:00" if value.endswith("Z") else value
        dot = text.find(".", 19)
        if dot != -1:
            end = dot + 1
            while end < len(text) and text[end].isdigit():
                end += 1
            if end - dot - 1 > 6:  # fromisoformat takes at most six digits; dateutil truncates the rest
                text = text[:dot + 7] + text[end:]
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
    return _dateutil_parse(value)


def install() -> bool:
    """Patch the SDK (idempotent); False when its modules no longer have the names patched here."""
    # Any: the attributes patched here are checked with hasattr, not known to the type checker.
    history: Any = importlib.import_module("azure.durable_functions.models.history.HistoryEvent")
    executor: Any = importlib.import_module("azure.durable_functions.models.TaskOrchestrationExecutor")
    if not hasattr(history, "dt_parse") or not hasattr(executor, "namedtuple"):
        return False
    history.dt_parse = parse_timestamp
    if not isinstance(executor.namedtuple, functools._lru_cache_wrapper):
        executor.namedtuple = functools.lru_cache(maxsize=32)(collections.namedtuple)
    return True
