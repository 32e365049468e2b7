"""Mutation testing of the code that reads untrusted input: `make mutation` (not part of `make test`).

For each module below, mutmut (https://github.com/boxed/mutmut) makes small changes to its functions (a `<` for a
`<=`, an `and` for an `or`, a string for "XXstringXX", ...) and runs the module's fast tests against each one; a
mutant the tests do not notice "survives". mutmut leaves module-level constants and regexes alone, so the
hand-written mutants in `tests/mutation/<module>.toml` (`[[hand]]`) cover those: each is applied as a text
substitution and the same tests are run.

Some survivors change nothing a caller, an operator or a log reader could observe (an error text, a cache size).
They are listed in the same TOML files as `[[equivalent]]`, each with the reason, and leave the denominator:

    score = (killed + timed out) / (mutants - equivalent)

Each module runs in its own scratch copy (`.mutation/<module>/`), made afresh every run, so the work tree is
never touched and no result is carried over from older code or older tests. `--report-only` prints the last run's
results again (after editing the equivalents, say) without running anything.

    python scripts/mutation.py [--all] [--max-children N] [--show-survivors] [--report-only] [module ...]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tokenize
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutation"
GOAL = 0.90

# Each module that reads untrusted input, and the fast tests that exercise it (no running stack; Azurite at most).
MODULES: dict[str, list[str]] = {
    "shared/webhook.py": ["tests/foundation/test_webhook.py"],
    "shared/routing.py": ["tests/foundation/test_routing.py", "tests/foundation/test_routing_decide.py",
                          "tests/foundation/test_routing_validation.py", "tests/foundation/test_holiday_calendar.py"],
    "shared/phone.py": ["tests/foundation/test_phone.py"],
    "shared/intake.py": ["tests/foundation/test_intake.py", "tests/foundation/test_intake_outcomes.py",
                         "tests/foundation/test_admission.py", "tests/foundation/test_drain.py"],
}
# The same discipline for the newer code that reads untrusted input (issue 17, item 4). Run with --all.
MORE_MODULES: dict[str, list[str]] = {
    "shared/mcp.py": ["tests/foundation/test_mcp_config.py"],
    "shared/rules_store.py": ["tests/foundation/test_rules_store.py"],
    "shared/rules_cli.py": ["tests/foundation/test_rules_cli.py"],
    "shared/console_auth.py": ["tests/console/test_console_auth.py"],
    "shared/history.py": ["tests/console/test_history.py"],
    "call_workflow/console.py": ["tests/console/test_console_requests.py"],
}

# What the tests import besides the mutated packages.
COPY = ["shared", "call_workflow", "localrun", "emulator", "tests", "function_app.py", "host.json", "routing.json",
        "rules.schema.json"]
KILLED = {"killed", "timeout", "segfault", "caught by type check"}
HAND_TIMEOUT_S = 300
# mutmut runs, for each mutant, only the tests that its stats say reach the function, selected by test id. A test
# it cannot select (an id pytest escapes, say) makes a mutant look killed without any test failing. So a fixed
# sample of the killed mutants is applied to a clean copy and the module's whole test files are run the plain way:
# each must still fail, or the score is not to be trusted.
SPOT_CHECK = 12


@dataclass
class Equivalent:
    function: str
    why: str
    before: str | None = None
    after: str | None = None
    strings_only: bool = False  # every survivor of `function` whose change lies inside string literals


@dataclass
class Hand:
    before: str
    after: str
    why: str = ""


@dataclass
class Outcome:
    module: str
    mutants: int = 0
    killed: int = 0
    equivalent: list[tuple[str, str]] = field(default_factory=list)  # (mutant, why)
    survived: list[tuple[str, str]] = field(default_factory=list)  # (mutant, diff)
    hand_total: int = 0
    hand_killed: int = 0
    killed_mutants: list[str] = field(default_factory=list)
    spot_checked: int = 0
    spot_failed: list[str] = field(default_factory=list)  # killed by mutmut, yet the plain test run passes

    @property
    def score(self) -> float:
        counted = self.mutants - len(self.equivalent)
        return self.killed / counted if counted else 1.0


def _stem(module: str) -> str:
    return Path(module).stem


def load_spec(module: str) -> tuple[list[Equivalent], list[Hand]]:
    path = ROOT / "tests" / "mutation" / f"{_stem(module)}.toml"
    if not path.exists():
        return [], []
    data = tomllib.loads(path.read_text("utf-8"))
    equivalents = [Equivalent(**entry) for entry in data.get("equivalent", [])]
    hands = [Hand(**entry) for entry in data.get("hand", [])]
    for eq in equivalents:
        if not eq.strings_only and (eq.before is None or eq.after is None):
            sys.exit(f"{path.name}: equivalent in {eq.function} needs before and after, or strings_only = true")
    return equivalents, hands


def _sync(dest: Path) -> None:
    """Copy what the tests need into dest, replacing what is there (mutmut's own cache in dest/mutants stays)."""
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in COPY:
        src, dst = ROOT / name, dest / name
        if dst.is_dir():
            shutil.rmtree(dst)
        elif dst.exists():
            dst.unlink()
        if src.is_dir():
            shutil.copytree(src, dst, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dst)


def _pyproject(modules: dict[str, list[str]]) -> str:
    base = (ROOT / "pyproject.toml").read_text("utf-8")
    sources = sorted({m.split("/")[0] for m in modules})
    tests = sorted({t for ts in modules.values() for t in ts})
    also = [c for c in COPY if c not in sources and c != "tests"]
    return base + "\n[tool.mutmut]\n" + "\n".join([
        f"source_paths = {json.dumps(sources)}",
        f"only_mutate = {json.dumps(list(modules))}",
        f"also_copy = {json.dumps(also)}",
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]',
        "use_git_change_detection = false",
    ]) + "\n"


def _workspace(module: str) -> Path:
    return WORK / _stem(module)


def run_mutmut(module: str, tests: list[str], *, max_children: int) -> None:
    work = _workspace(module)
    if work.exists():
        shutil.rmtree(work)
    _sync(work)
    (work / "pyproject.toml").write_text(_pyproject({module: tests}), "utf-8")
    mutmut = Path(sys.executable).parent / "mutmut"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    print(f"mutmut: {module} against {' '.join(tests)}", flush=True)
    proc = subprocess.run([str(mutmut), "run", "--max-children", str(max_children)], cwd=work, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"mutmut run failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")


def _code_without_strings(line: str) -> list[tuple[int, str]] | None:
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(line.strip() + "\n").readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return None
    return [(t.type, "" if t.type == tokenize.STRING else t.string) for t in tokens]


def _changed(diff: str) -> tuple[str, str]:
    lines = diff.splitlines()[2:]  # skip the ---/+++ header
    before = "\n".join(line[1:].strip() for line in lines if line.startswith("-"))
    after = "\n".join(line[1:].strip() for line in lines if line.startswith("+"))
    return before, after


def _function_of(mutant: str) -> str:
    # shared.routing.x_parse_hours__mutmut_12, or a method: shared.routing.xǁRulesǁload__mutmut_3
    name = mutant.rsplit("__mutmut_", 1)[0].rsplit(".", 1)[-1]
    return name.removeprefix("x_").replace("xǁ", "").replace("ǁ", ".")


def _is_equivalent(mutant: str, diff: str, equivalents: list[Equivalent]) -> str | None:
    before, after = _changed(diff)
    function = _function_of(mutant)
    for eq in equivalents:
        if eq.function != function:
            continue
        if eq.strings_only:
            b, a = _code_without_strings(before), _code_without_strings(after)
            if b is not None and b == a:
                return eq.why
        elif " ".join(eq.before.split()) == " ".join(before.split()) and \
                " ".join(eq.after.split()) == " ".join(after.split()):  # type: ignore[union-attr]
            return eq.why
    return None


def collect(module: str) -> Outcome:
    work = _workspace(module)
    cwd = Path.cwd()
    os.chdir(work)
    try:
        from mutmut.mutation.diff_apply import get_diff_for_mutant
        from mutmut.stats import status_by_exit_code
        meta = json.loads((work / "mutants" / f"{module}.meta").read_text("utf-8"))
        equivalents, _ = load_spec(module)
        out = Outcome(module)
        for mutant, code in sorted(meta["exit_code_by_key"].items()):
            status = status_by_exit_code[code]
            out.mutants += 1
            if status in KILLED:
                out.killed += 1
                if status == "killed":  # not timeouts: the plain run would hang as long
                    out.killed_mutants.append(mutant)
                continue
            diff = get_diff_for_mutant(mutant, path=Path(module))
            why = _is_equivalent(mutant, diff, equivalents)
            if why is not None:
                out.equivalent.append((mutant, why))
            else:
                out.survived.append((mutant, f"[{status}]\n{diff}"))
        return out
    finally:
        os.chdir(cwd)


def run_hand(module: str, tests: list[str], out: Outcome) -> None:
    """Apply each hand-written mutant of a module-level constant or regex to a clean copy and run the tests."""
    _, hands = load_spec(module)
    if not hands:
        return
    scratch = WORK / "hand"  # shared by the modules, one at a time
    if scratch.exists():
        shutil.rmtree(scratch)
    _sync(scratch)
    target = scratch / module
    original = target.read_text("utf-8")
    for hand in hands:
        if original.count(hand.before) != 1:
            sys.exit(f"tests/mutation/{_stem(module)}.toml: {hand.before!r} must occur exactly once in {module}")
        target.write_text(original.replace(hand.before, hand.after), "utf-8")
        killed = _pytest(scratch, tests)
        out.mutants += 1
        out.hand_total += 1
        if killed:
            out.killed += 1
            out.hand_killed += 1
        else:
            out.survived.append((f"hand: {hand.why or hand.before}",
                                 f"[survived]\n- {hand.before}\n+ {hand.after}"))
    target.write_text(original, "utf-8")


def _pytest(cwd: Path, tests: list[str]) -> bool:
    """True when the tests fail (or hang) in cwd: the mutant there is killed."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                              cwd=cwd, env=env, capture_output=True, timeout=HAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return True
    return proc.returncode != 0


def apply_diff(source: str, diff: str) -> str | None:
    """The source with a mutant applied from its diff, or None when a hunk does not match exactly once.

    Not `mutmut apply`: it replaces the first function of the mutant's name in the module, which for a method can
    be the same-named method of another class (a Protocol's, say), leaving the mutated one alone. The diff is of the
    function's code with the class indentation removed, so each hunk is looked for at the indentations a function
    or a method can have."""
    hunks: list[list[str]] = []
    for line in diff.splitlines()[2:]:
        if line.startswith("@@"):
            hunks.append([])
        elif hunks:
            hunks[-1].append(line)
    for hunk in hunks:
        old = [line[1:] for line in hunk if line[:1] in (" ", "-")]
        new = [line[1:] for line in hunk if line[:1] in (" ", "+")]
        for indent in ("", "    ", "        "):
            before = "\n".join(indent + line if line else line for line in old)
            if source.count(before) == 1:
                source = source.replace(before, "\n".join(indent + line if line else line for line in new))
                break
        else:
            return None
    return source


def spot_check(module: str, tests: list[str], out: Outcome) -> None:
    """Re-run a fixed sample of the mutants mutmut counted as killed without its test selection (see SPOT_CHECK)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    work = _workspace(module)
    original = (ROOT / module).read_text("utf-8")
    candidates = random.Random(17).sample(out.killed_mutants, len(out.killed_mutants))
    cwd = Path.cwd()
    try:
        for mutant in candidates:
            if out.spot_checked == SPOT_CHECK:
                break
            os.chdir(work)
            try:
                mutated = apply_diff(original, get_diff_for_mutant(mutant, path=Path(module)))
            finally:
                os.chdir(cwd)
            if mutated is None or mutated == original:
                continue  # a hunk that is not unique in the file: draw another
            (work / module).write_text(mutated, "utf-8")
            out.spot_checked += 1
            if not _pytest(work, tests):
                out.spot_failed.append(mutant)
    finally:
        (work / module).write_text(original, "utf-8")


def report(outcomes: list[Outcome], *, show_survivors: bool) -> bool:
    print(f"\n{'module':<30} {'mutants':>8} {'killed':>7} {'equiv.':>7} {'survived':>9} {'hand':>7} "
          f"{'score':>7}  goal")
    ok = True
    for o in outcomes:
        met = o.score >= GOAL and not o.spot_failed
        ok &= met
        hand = f"{o.hand_killed}/{o.hand_total}"
        print(f"{o.module:<30} {o.mutants:>8} {o.killed:>7} {len(o.equivalent):>7} {len(o.survived):>9} "
              f"{hand:>7} {o.score:>6.1%}  ≥ {GOAL:.0%} {'met' if met else 'NOT MET'}")
    for o in outcomes:
        print(f"spot check, {o.module}: {o.spot_checked - len(o.spot_failed)} of {o.spot_checked} killed mutants "
              "also fail the plain test run" + (f"; NOT: {', '.join(o.spot_failed)}" if o.spot_failed else ""))
    for o in outcomes:
        if show_survivors and o.survived:
            print(f"\n## {o.module}: {len(o.survived)} surviving mutants")
            for name, diff in o.survived:
                print(f"\n# {name} {diff}")
    print("\n(killed includes timeouts; hand = hand-written mutants of constants and regexes, killed/total; "
          "equivalent mutants are listed with their reasons in tests/mutation/*.toml)")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help="modules to mutate (default: the parsers of untrusted input)")
    parser.add_argument("--all", action="store_true", help="also the console API, rules from storage, MCP config")
    parser.add_argument("--report-only", action="store_true", help="report the last run again, run nothing")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--show-survivors", action="store_true", help="print the diff of every survivor")
    args = parser.parse_args()
    table = {**MODULES, **MORE_MODULES}
    chosen = args.modules or list(MODULES) + (list(MORE_MODULES) if args.all else [])
    unknown = [m for m in chosen if m not in table]
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; known: {', '.join(table)}")
    modules = {m: table[m] for m in chosen}
    outcomes = []
    for module, tests in modules.items():
        if not args.report_only:
            run_mutmut(module, tests, max_children=args.max_children)
        outcome = collect(module)
        spot_check(module, tests, outcome)
        run_hand(module, tests, outcome)
        outcomes.append(outcome)
    return 0 if report(outcomes, show_survivors=args.show_survivors) else 1


if __name__ == "__main__":
    raise SystemExit(main())
