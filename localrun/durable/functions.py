"""Index of an app's durable functions (orchestrators and activities)."""
from __future__ import annotations

import dataclasses
import inspect
import weakref
from collections.abc import Callable
from typing import Any

_FUNCTIONS_CACHE: weakref.WeakKeyDictionary[Any, list] = weakref.WeakKeyDictionary()


def app_functions(app: Any) -> list:
    """``app.get_functions()``, cached per app object.

    ``FunctionApp.get_functions()`` may be called only once per app: a second call
    raises ``ValueError: Function X does not have a unique function name``. Everyone
    (engine, HTTP layer of the local runner) must go through this helper.
    """
    try:
        return _FUNCTIONS_CACHE[app]
    except KeyError:
        functions = list(app.get_functions())
        _FUNCTIONS_CACHE[app] = functions
        return functions


@dataclasses.dataclass
class ActivityFunction:
    name: str
    fn: Callable[..., Any]
    input_name: str | None = None  # keyword the worker passes the input as; None = positional
    accepts_context: bool = False  # declares ``context``: the worker passes the invocation context (func.Context)

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)


class FunctionIndex:
    """Names -> orchestrator ``handle`` callables and activity callables."""

    def __init__(self) -> None:
        self.orchestrators: dict[str, Callable[[Any], str]] = {}
        self.activities: dict[str, ActivityFunction] = {}
        self.functions: list = []  # every Function of the app (HTTP triggers too)

    @classmethod
    def from_app(cls, app: Any) -> FunctionIndex:
        return cls.from_functions(app_functions(app))

    @classmethod
    def from_functions(cls, functions: list) -> FunctionIndex:
        index = cls()
        index.functions = list(functions)
        for f in functions:
            trigger = f.get_trigger()
            ttype = getattr(trigger, "type", None)
            name = f.get_function_name()
            if ttype == "orchestrationTrigger":
                handle = f.get_user_function()
                index.add_orchestrator(name, handle)
                alias = getattr(trigger, "orchestration", None)
                if alias and alias != name:
                    index.add_orchestrator(alias, handle)
            elif ttype == "activityTrigger":
                user = f.get_user_function()
                try:
                    accepts = "context" in inspect.signature(user).parameters
                except (TypeError, ValueError):
                    accepts = False
                activity = ActivityFunction(name, user, trigger.name, accepts)
                index.activities[name] = activity
                alias = getattr(trigger, "activity", None)
                if alias and alias != name:
                    index.activities[alias] = dataclasses.replace(activity, name=alias)
        return index

    def add_orchestrator(self, name: str, handle: Callable[[Any], str]) -> None:
        """Register an orchestrator ``handle`` (``Orchestrator.create(fn)``)."""
        self.orchestrators[name] = handle

    def orchestrator(self, name: str) -> Callable[[Any], str]:
        try:
            return self.orchestrators[name]
        except KeyError:
            raise KeyError(f"no orchestrator function named {name!r}") from None
