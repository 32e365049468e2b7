"""``python -m shared.routing validate FILE``: check a rules file exactly as the app would, before publishing it.

The same parser (``parse_rules_text``), the same registered tool names (the app's tools module is imported, as
call_workflow/runtime.py does at start-up), the same call-length cap (MAX_CALL_DURATION_SECONDS, default 900) and
the same start-up warnings. Exit codes: 0 valid, 1 invalid (the error on stderr, naming the field), 2 usage error
or unreadable file.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from .routing import RoutingRules, RoutingRulesError, parse_rules_text, warn_about_past_holidays
from .settings import SETTINGS, SettingsError
from .tools import registry

# The module whose import registers the app's tools (call_workflow/runtime.py imports it at start-up). Named, not
# imported, here: shared/ never imports the Functions layer, but a check of the rules needs the registered names.
APP_TOOLS_MODULE = "call_workflow.agent_tools"
EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    pass


def max_call_duration(environ: dict[str, str] | os._Environ[str] = os.environ) -> int:
    from .settings import _duration

    default = next(s.default for s in SETTINGS if s.name == "MAX_CALL_DURATION_SECONDS")
    try:
        return _duration((environ.get("MAX_CALL_DURATION_SECONDS") or "").strip() or str(default))
    except SettingsError as exc:
        raise UsageError(str(exc)) from None


def validate_bytes(data: bytes, source: str, *, tools_module: str = APP_TOOLS_MODULE,
                   max_call_duration_seconds: int | None = None) -> RoutingRules:
    """Parse and validate as the app does; raises RoutingRulesError (invalid) or UsageError."""
    try:
        importlib.import_module(tools_module)
    except ImportError as exc:
        raise UsageError(f"cannot import the tools module {tools_module!r} ({exc})") from None
    limit = max_call_duration() if max_call_duration_seconds is None else max_call_duration_seconds
    return parse_rules_text(data, source, tool_names=registry.names(), max_call_duration_seconds=limit)


def read_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.routing", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("validate", help="validate a routing rules file as the app would")
    check.add_argument("file")
    check.add_argument("--tools-module", default=APP_TOOLS_MODULE,
                       help=f"module that registers the tools (default {APP_TOOLS_MODULE})")
    args = parser.parse_args(argv)  # exits 2 on a usage error
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    try:
        rules = validate_bytes(read_file(args.file), args.file, tools_module=args.tools_module)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RoutingRulesError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return EXIT_INVALID
    warn_about_past_holidays(rules, datetime.now(UTC).date())
    print(f"{args.file}: valid ({len(rules.profiles)} profiles, {len(rules.numbers)} numbers)")
    return EXIT_OK
