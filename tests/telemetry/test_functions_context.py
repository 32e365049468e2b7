"""The functions that open a span from their invocation's trace context declare ``context`` the way the Python
worker accepts it (azure-functions-python-worker ``functions.py``: ``typing.get_type_hints`` of the function, and a
``context`` annotation whose type is named ``Context``), and keep their Durable names."""

from __future__ import annotations

import inspect
import typing

import azure.durable_functions as df
import pytest

from call_workflow import activities, incoming

_APP = None


def _functions() -> dict[str, typing.Any]:
    global _APP
    if _APP is None:
        _APP = df.DFApp()
        _APP.register_functions(activities.bp)
        _APP.register_functions(incoming.bp)
    from localrun.durable.functions import app_functions

    return {f.get_function_name(): f for f in app_functions(_APP)}


@pytest.mark.parametrize("name", ["converse", "hangup_call", "refer_call", "publish_call_record", "incoming_call"])
def test_context_is_declared_as_the_worker_requires(name: str) -> None:
    fn = _functions()[name].get_user_function()
    params = inspect.signature(fn).parameters
    assert "context" in params
    hints = typing.get_type_hints(fn)
    assert isinstance(hints["context"], type) and hints["context"].__name__ == "Context"
    # Every other parameter is a binding of the function (the worker refuses undeclared ones).
    bindings = {b.name for b in _functions()[name].get_bindings()}
    assert set(params) - {"context"} <= bindings
