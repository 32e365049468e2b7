"""Loading a v2-model Functions app and indexing its HTTP triggers.

`app.get_functions()` may be called only once per app object (a second call raises: the app caches the
names it has seen), so `functions_of(app)` caches the list per app and, when somebody else called
`get_functions()` first, rebuilds the same `Function` objects from the app's builders (`build()` is
idempotent) instead of calling it again.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
import weakref
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .routes import RouteTemplate

_cache: weakref.WeakKeyDictionary[Any, list] = weakref.WeakKeyDictionary()


def load_app(spec: str, app_dir: str | None = None) -> Any:
    """Import `module:attribute` (default attribute `app`), with `app_dir` first on sys.path."""
    module_name, _, attr = spec.partition(":")
    attr = attr or "app"
    if app_dir:
        app_dir = str(Path(app_dir).resolve())
        if app_dir not in sys.path:
            sys.path.insert(0, app_dir)
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise SystemExit(f"{module_name} has no attribute {attr!r} (expected the FunctionApp object)") from None


def functions_of(app: Any) -> list:
    """The app's `Function` objects, computed once per app object.

    Goes through the Durable engine's cache (`localrun.durable.functions.app_functions`) so the engine and
    the HTTP layer share one `get_functions()` call.
    """
    try:
        return _cache[app]
    except KeyError:
        pass
    try:
        from localrun.durable.functions import app_functions
    except ImportError:  # engine not installed: index on our own
        app_functions = None  # type: ignore[assignment]  # the optional-import idiom
    if app_functions is not None:
        functions = app_functions(app)
    elif getattr(app, "functions_bindings", None):
        # get_functions() was already called on this app by someone else: a second call would raise.
        functions = [b.build(app.auth_level) for b in app._function_builders]
    else:
        functions = app.get_functions()
    _cache[app] = functions
    return functions


def _enum_value(v: Any) -> str:
    return str(getattr(v, "value", v))


@dataclass
class ClientBinding:
    name: str
    task_hub: str | None
    connection_name: str | None


@dataclass
class HttpFunction:
    name: str
    function: Any
    trigger_name: str
    template: RouteTemplate
    methods: frozenset[str] | None  # None: every method
    auth_level: str  # "anonymous" | "function" | "admin"
    client: ClientBinding | None
    accepts_context: bool

    @property
    def route(self) -> str:
        return self.template.template

    def allows(self, method: str) -> bool:
        return self.methods is None or method.upper() in self.methods


def http_functions(functions: list) -> list[HttpFunction]:
    result = []
    for f in functions:
        trigger = f.get_trigger()
        if trigger is None or trigger.type != "httpTrigger":
            continue
        name = f.get_function_name()
        route = getattr(trigger, "route", None) or name
        methods = getattr(trigger, "methods", None)
        method_set = frozenset(_enum_value(m).upper() for m in methods) if methods else None
        auth = _enum_value(getattr(trigger, "auth_level", None) or "function").lower()
        client = None
        for b in f.get_bindings():
            if b.type == "durableClient":
                d = b.get_dict_repr()
                client = ClientBinding(b.name, d.get("taskHub"), d.get("connectionName"))
        user = f.get_user_function()
        try:
            params = inspect.signature(user).parameters
        except (TypeError, ValueError):
            params = inspect.Signature().parameters  # none
        result.append(HttpFunction(name, f, trigger.name, RouteTemplate.parse(route), method_set, auth, client,
                                   "context" in params))
    return result


def read_host_json(app_dir: Path) -> dict:
    path = app_dir / "host.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise SystemExit(f"{path}: not valid JSON ({exc})") from None


def apply_local_settings(app_dir: Path, environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Copy `local.settings.json` Values into the environment, as `func start` does; env vars win.

    Returns the names that were set (never their values).
    """
    environ = os.environ if environ is None else environ
    path = app_dir / "local.settings.json"
    if not path.exists():
        return []
    try:
        values = json.loads(path.read_text()).get("Values") or {}
    except ValueError as exc:
        raise SystemExit(f"{path}: not valid JSON ({exc})") from None
    applied = []
    for k, v in values.items():
        if k not in environ and v is not None:
            environ[k] = str(v)
            applied.append(k)
    return applied
