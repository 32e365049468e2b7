"""Route templates of HTTP triggers (the ASP.NET-style subset the Functions host accepts).

Supported: literal segments (case-insensitive), `{name}`, typed constraints `{name:int}`, `{name:alpha}`,
`{name:guid}`, `{name:bool}`, `{name:long}`, `{name:double}`/`{name:float}`/`{name:decimal}`, `{name:datetime}`,
`{name:minlength(n)}`/`{name:maxlength(n)}`/`{name:length(n)}`/`{name:regex(...)}`, optional parameters
`{name?}` as the last segment, and the catch-all `{*name}`.

When several templates match a path, the most specific wins (literal segments before constrained parameters
before plain parameters before catch-alls), as in the Functions host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "alpha": r"[A-Za-z]+",
    "bool": r"(?i:true|false)",
    "guid": r"[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}",
    "double": r"-?\d+(?:\.\d+)?",
    "float": r"-?\d+(?:\.\d+)?",
    "decimal": r"-?\d+(?:\.\d+)?",
    "datetime": r"[0-9T:.\-+Z]+",
}

_PARAM = re.compile(
    r"^\{(?P<star>\*{1,2})?(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<constraints>(?::[^}?]+)*)(?P<opt>\?)?\}$"
)


class RouteTemplateError(ValueError):
    pass


def _constraint_regex(spec: str, template: str) -> tuple[str, list]:
    """Regex for the value and extra checks (length limits) for one `:constraint` chain."""
    value = r"[^/]+"
    checks: list = []
    for c in [c for c in spec.split(":") if c]:
        m = re.fullmatch(r"(minlength|maxlength|length|min|max|regex)\((.*)\)", c)
        if c in _CONSTRAINTS:
            value = _CONSTRAINTS[c]
        elif m and m.group(1) == "regex":
            value = m.group(2)
        elif m and m.group(1) in ("minlength", "maxlength", "length", "min", "max"):
            kind, arg = m.group(1), m.group(2)
            checks.append((kind, arg))
        else:
            raise RouteTemplateError(f"route {template!r}: unsupported constraint {c!r}")
    return value, checks


@dataclass
class RouteTemplate:
    template: str
    regex: re.Pattern
    params: list[str]
    precedence: tuple
    checks: dict[str, list] = field(default_factory=dict)

    @classmethod
    def parse(cls, template: str) -> RouteTemplate:
        template = template.strip("/")
        parts = [p for p in template.split("/")] if template else []
        pattern = ""
        params: list[str] = []
        precedence: list[int] = []
        checks: dict[str, list] = {}
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if "{" not in part:
                pattern += "/" + re.escape(part)
                precedence.append(0)
                continue
            m = _PARAM.match(part)
            if not m:
                raise RouteTemplateError(f"route {template!r}: unsupported segment {part!r}")
            name = m.group("name")
            if name in params:
                raise RouteTemplateError(f"route {template!r}: parameter {name!r} appears twice")
            params.append(name)
            if m.group("star"):
                if not last:
                    raise RouteTemplateError(f"route {template!r}: a catch-all must be the last segment")
                pattern += f"(?:/(?P<{name}>.*))?"
                precedence.append(3)
                continue
            value, extra = _constraint_regex(m.group("constraints") or "", template)
            if extra:
                checks[name] = extra
            if m.group("opt"):
                if not last:
                    raise RouteTemplateError(f"route {template!r}: only the last parameter may be optional")
                pattern += f"(?:/(?P<{name}>{value}))?"
            else:
                pattern += f"/(?P<{name}>{value})"
            precedence.append(1 if m.group("constraints") else 2)
        regex = re.compile("^" + pattern + "/?$", re.IGNORECASE)
        # Compared segment by segment: literal (0) < constrained (1) < plain parameter (2) < catch-all (3).
        return cls(template, regex, params, tuple(precedence), checks)

    def match(self, path: str) -> dict[str, str] | None:
        """`path` is the part after the route prefix, starting with "/" (or empty)."""
        if path and not path.startswith("/"):
            path = "/" + path
        m = self.regex.match(path.rstrip("/") if path != "/" else "")
        if not m:
            return None
        values = {k: v for k, v in m.groupdict().items() if v is not None}
        for name, extra in self.checks.items():
            v = values.get(name)
            if v is None:
                continue
            for kind, arg in extra:
                if not _check(kind, arg, v):
                    return None
        return values


def _check(kind: str, arg: str, value: str) -> bool:
    try:
        if kind == "minlength":
            return len(value) >= int(arg)
        if kind == "maxlength":
            return len(value) <= int(arg)
        if kind == "length":
            if "," in arg:
                lo, hi = (int(x) for x in arg.split(","))
                return lo <= len(value) <= hi
            return len(value) == int(arg)
        if kind == "min":
            return float(value) >= float(arg)
        if kind == "max":
            return float(value) <= float(arg)
    except ValueError:
        return False
    return True
