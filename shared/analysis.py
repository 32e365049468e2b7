"""Post-call analysis: a summary, structured data and a success verdict for one finished call.

A profile's ``analysis`` block (docs/analysis.md) is validated when the routing rules load
(:func:`parse_spec`): the ``data`` schema must be valid JSON Schema (checked against the 2020-12 meta-schema
with the ``jsonschema`` package) *and* a schema that Azure OpenAI structured outputs accepts in strict mode
(every object lists all its properties in ``required`` and sets ``additionalProperties: false``), because a
schema the service refuses would only show up as a failed analysis on every call.

After the call, :class:`AnalysisClient` asks a chat deployment (``AZURE_OPENAI_ANALYSIS_DEPLOYMENT``) through
the v1 chat completions API with ``response_format: json_schema, strict: true``, so the answer follows the
schema; the answer is checked against the schema again before it goes into the record. The whole analysis has a
time budget with its own retries, and the prompt only ever holds masked numbers: the caller and dialed
numbers arrive masked, and phone-number-like digit runs in the transcript are masked here.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import re
import time
from typing import TYPE_CHECKING, Any, TypedDict

from .phone import mask

if TYPE_CHECKING:  # imported where used: shared.routing imports this module, and most profiles have no analysis
    import httpx

    from .auth import AuthProvider

log = logging.getLogger("switchboard.analysis")

# Structured outputs limits (docs/analysis.md "Schema rules"): nesting depth and total properties.
MAX_SCHEMA_DEPTH = 10
MAX_SCHEMA_PROPERTIES = 5000
MAX_INSTRUCTIONS_CHARS = 4_000
# The whole analysis, all attempts included: the record waits for it (the orchestrator's own timer is a
# backstop a little longer than this).
BUDGET_SECONDS = 60.0
ATTEMPT_TIMEOUT_SECONDS = 25.0
BACKOFF_SECONDS = (1.0, 3.0)
# The transcript sent is bounded: the last turns of a very long call are kept.
MAX_PROMPT_CHARS = 60_000
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})

# Keywords structured outputs rejects in strict mode (docs/analysis.md "Schema rules").
_UNSUPPORTED = ("patternProperties", "unevaluatedProperties", "propertyNames", "if", "then", "else",
                "dependentRequired", "dependentSchemas", "contains", "not")
# A phone number as it appears in a transcript: an optional '+', then 7 to 15 digits with spaces, dots, dashes
# or brackets between them.
_PHONEISH = re.compile(r"\+?\d(?:[\s().\-]{0,2}\d){6,14}")


class AnalysisSpecError(ValueError):
    """The ``analysis`` block is invalid; the message starts with the path of the bad field."""


class AnalysisError(Exception):
    """The analysis could not be made (the service failed, timed out, refused, or answered off-schema)."""


class Success(TypedDict):
    value: bool
    reason: str


class Analysis(TypedDict):
    summary: str
    data: dict[str, Any]
    success: Success
    model: str
    ms: int


# ------------------------------------------------------------------------------------------- the spec


def parse_spec(raw: Any, path: str) -> dict[str, Any]:
    """Validate a profile's ``analysis`` block; returns the JSON-able spec (raises AnalysisSpecError)."""
    if not isinstance(raw, dict):
        raise AnalysisSpecError(f"{path}: expected an object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - {"summary", "data", "success"})
    if unknown:
        raise AnalysisSpecError(f"{path}.{unknown[0]}: unknown key (allowed: data, success, summary)")
    for key in ("summary", "success"):
        if key not in raw:
            raise AnalysisSpecError(f"{path}.{key}: is required")
        value = raw[key]
        if not isinstance(value, str) or not value.strip():
            raise AnalysisSpecError(f"{path}.{key}: expected non-empty instructions")
        if len(value) > MAX_INSTRUCTIONS_CHARS:
            raise AnalysisSpecError(f"{path}.{key}: longer than {MAX_INSTRUCTIONS_CHARS} characters")
    spec: dict[str, Any] = {"summary": raw["summary"], "success": raw["success"]}
    if "data" in raw:
        check_strict_schema(raw["data"], f"{path}.data")
        spec["data"] = copy.deepcopy(raw["data"])
    return spec


def check_strict_schema(schema: Any, path: str) -> None:
    """Raise AnalysisSpecError unless ``schema`` is valid JSON Schema that strict structured outputs accepts."""
    if not isinstance(schema, dict):
        raise AnalysisSpecError(f"{path}: expected a JSON Schema object, got {type(schema).__name__}")
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in exc.path)
        raise AnalysisSpecError(f"{path}{where}: not a valid JSON Schema ({exc.message})") from None
    if schema.get("type") != "object":
        raise AnalysisSpecError(f"{path}.type: the root of the data schema must be an object")
    count = [0]
    _strict(schema, path, 1, count)
    if count[0] > MAX_SCHEMA_PROPERTIES:
        raise AnalysisSpecError(f"{path}: more than {MAX_SCHEMA_PROPERTIES} properties")


def _strict(node: Any, path: str, depth: int, count: list[int]) -> None:
    if not isinstance(node, dict):
        return
    if depth > MAX_SCHEMA_DEPTH:
        raise AnalysisSpecError(f"{path}: nested deeper than {MAX_SCHEMA_DEPTH} levels")
    for key in _UNSUPPORTED:
        if key in node:
            raise AnalysisSpecError(f"{path}.{key}: not supported by structured outputs (strict)")
    types = node.get("type")
    is_object = types == "object" or (isinstance(types, list) and "object" in types) or "properties" in node
    if is_object:
        props = node.get("properties")
        if not isinstance(props, dict) or not props:
            raise AnalysisSpecError(f"{path}.properties: an object needs its properties listed")
        if node.get("additionalProperties") is not False:
            raise AnalysisSpecError(f"{path}.additionalProperties: must be false (structured outputs, strict)")
        missing = sorted(set(props) - set(node.get("required") or []))
        if missing:
            raise AnalysisSpecError(f"{path}.required: must list every property (missing {missing[0]!r}); "
                                    "make a property optional with a 'null' type instead")
        count[0] += len(props)
        for name, sub in props.items():
            _strict(sub, f"{path}.properties.{name}", depth + 1, count)
    if "items" in node:
        _strict(node["items"], f"{path}.items", depth + 1, count)
    for key in ("anyOf",):
        for i, sub in enumerate(node.get(key) or []):
            _strict(sub, f"{path}.{key}[{i}]", depth + 1, count)
    for key in ("$defs", "definitions"):
        for name, sub in (node.get(key) or {}).items():
            _strict(sub, f"{path}.{key}.{name}", depth, count)
    if "oneOf" in node or "allOf" in node:
        raise AnalysisSpecError(f"{path}: use anyOf (oneOf and allOf are not supported by structured outputs)")


# ---------------------------------------------------------------------------------------- the request


def response_schema(spec: dict[str, Any]) -> dict[str, Any]:
    """The schema the model must answer with: the summary, the profile's data schema and the success verdict."""
    data = copy.deepcopy(spec.get("data") or {"type": "object", "properties": {}, "required": [],
                                                  "additionalProperties": False})
    return {
        "type": "object",
        "properties": {
            "summary": {"type": "string"},
            "data": data,
            "success": {"type": "object", "properties": {"value": {"type": "boolean"}, "reason": {"type": "string"}},
                        "required": ["value", "reason"], "additionalProperties": False},
        },
        "required": ["summary", "data", "success"],
        "additionalProperties": False,
    }


def mask_digits(text: str) -> str:
    """Phone-number-like digit runs in free text, masked as shared.phone.mask masks a number."""
    def one(m: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", m.group(0))
        return mask(("+" if m.group(0).startswith("+") else "") + digits) or "***"

    return _PHONEISH.sub(one, text)


def build_messages(call: dict[str, Any], transcript: list[dict[str, Any]], spec: dict[str, Any]) -> list[dict]:
    """The chat messages. Numbers are the masked ones (call input) and digit runs in the turns are masked."""
    system = (
        "You analyse a finished phone call between a caller and a voice agent, from its transcript.\n"
        f"Summary: {spec['summary']}\n"
        f"Success: decide whether the call succeeded by this rubric, and give a one-line reason: {spec['success']}\n"
        + ("Data: extract the fields of the `data` object from the call; when the call does not say, use null "
           "where the schema allows it, else an empty value.\n" if spec.get("data") else "")
        + "Answer only from the transcript."
    )
    facts = {
        "caller": mask_digits(str(call.get("caller") or "unknown")),
        "dialed": mask_digits(str(call.get("dialed") or "unknown")),
        "profile": call.get("profile_name"),
        "started_at": call.get("accepted_at"),
    }
    lines = [f"{t.get('role')}: {mask_digits(str(t.get('text') or ''))}" for t in transcript if t.get("text")]
    text = "\n".join(lines)
    if len(text) > MAX_PROMPT_CHARS:  # keep the end of a very long call: that is where it was settled
        text = "[earlier turns left out]\n" + text[-MAX_PROMPT_CHARS:]
    user = f"Call: {json.dumps(facts)}\nTranscript:\n{text or '(nothing was said)'}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def build_request(deployment: str, call: dict[str, Any], transcript: list[dict[str, Any]],
                  spec: dict[str, Any]) -> dict[str, Any]:
    """The chat completions body (v1 API: ``model`` is the deployment name)."""
    return {
        "model": deployment,
        "messages": build_messages(call, transcript, spec),
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "call_analysis", "strict": True,
                                            "schema": response_schema(spec)}},
    }


# ----------------------------------------------------------------------------------------- the client


class AnalysisClient:
    """Chat completions on ``{endpoint}/openai/v1/chat/completions`` over one pooled client."""

    def __init__(self, endpoint: str, deployment: str, auth: AuthProvider, *, http: httpx.AsyncClient | None = None,
                 budget_seconds: float = BUDGET_SECONDS, attempt_timeout: float = ATTEMPT_TIMEOUT_SECONDS,
                 backoff: tuple[float, ...] = BACKOFF_SECONDS) -> None:
        if not deployment:
            raise ValueError("the analysis deployment is empty")
        import httpx

        from .tls import client_context

        self._url = endpoint.rstrip("/") + "/openai/v1/chat/completions"
        self.deployment = deployment
        self._auth = auth
        self._own_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(
            verify=client_context(), follow_redirects=False,
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=5, keepalive_expiry=60))
        self._budget = budget_seconds
        self._attempt_timeout = attempt_timeout
        self._backoff = backoff

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def analyze(self, call: dict[str, Any], transcript: list[dict[str, Any]],
                      spec: dict[str, Any]) -> Analysis:
        """The analysis within the budget; raises AnalysisError. 429, 5xx, timeouts and dropped connections are
        retried while the budget lasts; a 4xx, a refusal or an off-schema answer is not (it would repeat)."""
        body = build_request(self.deployment, call, transcript, spec)
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._budget):
                answer = await self._attempts(body)
        except TimeoutError:
            raise AnalysisError(f"no answer within the {self._budget:g} s budget") from None
        result = _parse_answer(answer, response_schema(spec))
        return Analysis(summary=result["summary"], data=result["data"],
                        success=Success(value=result["success"]["value"], reason=result["success"]["reason"]),
                        model=str(answer.get("model") or self.deployment),
                        ms=round((time.monotonic() - started) * 1000))

    async def _attempts(self, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        content = json.dumps(body, separators=(",", ":")).encode()
        attempt = 0
        while True:
            problem: str
            try:
                headers = {"Content-Type": "application/json", **(await self._auth.headers())}
                response = await self._http.post(self._url, content=content, headers=headers,
                                                 timeout=self._attempt_timeout)
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            else:
                if response.status_code == 200:
                    try:
                        answer = response.json()
                    except ValueError:
                        raise AnalysisError("the answer is not JSON") from None
                    if not isinstance(answer, dict):
                        raise AnalysisError("the answer is not a JSON object")
                    return answer
                problem = f"HTTP {response.status_code}{_error_code(response)}"
                if response.status_code not in RETRYABLE_STATUS:
                    raise AnalysisError(problem)
            if attempt >= len(self._backoff):
                raise AnalysisError(f"{problem} after {attempt + 1} attempts")
            log.warning("analysis attempt %d failed (%s); retrying", attempt + 1, problem)
            await asyncio.sleep(self._backoff[attempt])
            attempt += 1


def _error_code(response: httpx.Response) -> str:
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return ""
    return f" {code}" if isinstance(code, str) and re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", code) else ""


def _parse_answer(answer: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError as SchemaValidationError

    try:
        choice = answer["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        raise AnalysisError("the answer has no message") from None
    if message.get("refusal"):
        raise AnalysisError("the model refused")
    if choice.get("finish_reason") not in (None, "stop"):
        raise AnalysisError(f"the answer stopped early ({str(choice.get('finish_reason'))[:32]})")
    try:
        result = json.loads(message.get("content") or "")
    except ValueError:
        raise AnalysisError("the answer's content is not JSON") from None
    try:
        Draft202012Validator(schema).validate(result)
    except SchemaValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise AnalysisError(f"the answer does not follow the schema at {where}") from None
    return result
