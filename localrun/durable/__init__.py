"""Durable Functions engine for tests and the local runner (see docs/durable.md).

The real azure-functions-durable replay engine runs the orchestrators; this package
plays the host/DTFx side, in memory or with a task hub folder (store.py).
"""
from .clock import Clock, RealClock, VirtualClock
from .engine import (
                     COMPLETED,
                     FAILED,
                     PENDING,
                     RUNNING,
                     TERMINATED,
                     WORKER_DIED,
                     DurableEngine,
                     EngineError,
                     InstanceExistsError,
                     InstanceNotFound,
                     InstanceNotRunningError,
                     UnknownFunctionError,
                     decode_activity_input,
                     encode_activity_output,
                     iter_events,
)
from .functions import ActivityFunction, FunctionIndex, app_functions
from .history import EventType
from .replay import NonDeterminismError, ReplaySettings
from .store import TaskHubStore

__all__ = [
    "Clock", "RealClock", "VirtualClock", "DurableEngine", "EngineError", "InstanceExistsError",
    "InstanceNotFound", "InstanceNotRunningError", "UnknownFunctionError", "FunctionIndex",
    "ActivityFunction", "app_functions", "EventType", "NonDeterminismError", "ReplaySettings",
    "PENDING", "RUNNING", "COMPLETED", "FAILED", "TERMINATED", "WORKER_DIED",
    "decode_activity_input", "encode_activity_output", "iter_events", "TaskHubStore",
]
