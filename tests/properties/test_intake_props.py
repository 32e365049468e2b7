"""Properties of the intake (shared/intake.py) on authentic deliveries of arbitrary JSON: every body gets a clean
answer (400 for a malformed event, 200 "ignored" for another event type, or a routed call), never an exception and
never a 500, and nothing reaches the platform or the workflow unless the event is a well-formed incoming call.

The signature is valid in every example, so these exercise the parsing behind it (shared/webhook.parse_event and
parse_incoming_call, shared/phone on the From/To values) through Intake.handle. The platform's call-control API is
an httpx MockTransport that answers 200 to whatever it is sent and records it."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from typing import Any

import httpx
from hypothesis import event, example, given
from hypothesis import strategies as st

from shared.auth import ApiKeyAuth
from shared.call_control import CallControlClient
from shared.intake import Intake, IntakeResult
from shared.webhook import sign
from tests.foundation.harness import DEPLOYMENT, Workflow, default_rules, tool_registry

SECRET = "whsec_cHJvcGVydHktdGVzdC1rZXktMzItYnl0ZXMtbG9uZyE="
NOW = datetime(2026, 3, 4, 15, 0, tzinfo=UTC)  # a Wednesday afternoon: the demo rules' office hours are open
RULES = default_rules()
INCOMING = "realtime.call.incoming"
# What a platform call id looks like, written out here rather than imported so the test is an independent oracle.
_CALL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-.]{0,127}", re.ASCII)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
NUMBERS = st.sampled_from(["+14255551212", "+18005551212", "+18005550100", "4255551212", "+1900555", "anonymous",
                           "+\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669", ""])
HEADER_VALUES = st.builds(lambda tpl, n: tpl.format(n=n), st.sampled_from(
    ['"Caller" <sip:{n}@pstn.example>;tag=1', "<sip:{n}@h>", "tel:{n}", "sip:{n}@h;tag=x", '"unterminated <sip:{n}@h>',
     "<sip:{n}@h", "{n}"]), NUMBERS) | st.text(st.characters(codec="utf-8"), max_size=300)
VALID_HEADER = st.fixed_dictionaries({"name": st.sampled_from(["From", "To", "f", "t", " from ", "Call-ID"]) | st.text(
    max_size=10), "value": HEADER_VALUES})
HEADER = st.one_of(VALID_HEADER, VALID_HEADER, VALID_HEADER, JSON)  # mostly well-formed entries, some not
CALL_IDS = st.from_regex(_CALL_ID, fullmatch=True)
# Most events are well-formed; a mutation then breaks (or deletes) one field with arbitrary JSON.
FIELDS = [None, None, None, "id", "type", "created_at", "data", "data.call_id", "data.sip_headers"]


def _event(call_id: str, event_type: str, headers: list[Any], field: str | None, junk: Any, delete: bool) -> Any:
    payload: dict[str, Any] = {"object": "event", "id": "evt_1", "type": event_type, "created_at": 1_772_636_400,
                               "data": {"call_id": call_id, "sip_headers": headers, "sip_media_security": "srtp"}}
    if field is not None:
        parent, _, key = field.rpartition(".")
        target = payload["data"] if parent else payload
        if delete:
            del target[key]
        else:
            target[key] = junk
    return payload


EVENTS = st.builds(_event, CALL_IDS, st.sampled_from([INCOMING, INCOMING, INCOMING, "realtime.call.ended"]),
                   st.lists(HEADER, max_size=6), st.sampled_from(FIELDS), JSON, st.booleans())


def expected(payload: Any) -> str:
    """400, ignored or call: what an event is, judged without the product's parser."""
    if not isinstance(payload, dict):
        return "400"
    ok = (isinstance(payload.get("id"), str) and payload["id"] and isinstance(payload.get("type"), str)
          and payload["type"] and type(payload.get("created_at")) is int and isinstance(payload.get("data"), dict))
    if not ok:
        return "400"
    if payload["type"] != INCOMING:
        return "ignored"
    data = payload["data"]
    call_id, headers = data.get("call_id"), data.get("sip_headers")
    if not isinstance(call_id, str) or not _CALL_ID.fullmatch(call_id) or not isinstance(headers, list):
        return "400"
    if len(headers) > 256 or not all(isinstance(h, dict) and isinstance(h.get("name"), str)
                                     and isinstance(h.get("value"), str) for h in headers):
        return "400"
    return "call"


async def deliver(body: bytes) -> tuple[IntakeResult, list[httpx.Request], Workflow]:
    sent: list[httpx.Request] = []

    def platform(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={})

    wf = Workflow()
    async with httpx.AsyncClient(transport=httpx.MockTransport(platform)) as http:
        cc = CallControlClient("https://aoai.example", ApiKeyAuth("k"), http=http, backoff=(0.0,))
        intake = Intake(secrets=(SECRET,), rules=RULES, call_control=cc, deployment=DEPLOYMENT,
                        tools=tool_registry(), max_call_duration_seconds=900, clock=lambda: NOW)
        ts = int(NOW.timestamp())
        headers = {"webhook-id": "wh_1", "webhook-timestamp": str(ts),
                   "webhook-signature": sign(SECRET, "wh_1", ts, body)}
        result = await intake.handle(body, headers, **wf.kwargs())
    return result, sent, wf


def check(body: bytes, kind: str) -> None:
    event(kind)  # --hypothesis-show-statistics: how many examples reached each outcome
    result, sent, wf = asyncio.run(deliver(body))
    if kind == "400":
        assert result.status == 400 and result.body["error"] == "malformed_event", result
        assert isinstance(result.body["detail"], str) and result.body["detail"]
    elif kind == "ignored":
        assert (result.status, result.body) == (200, {"status": "ignored"}), result
    if kind != "call":
        assert not sent and not wf.started and not wf.unstarted
        return
    call_id = json.loads(body)["data"]["call_id"]
    assert result.status == 200 and result.call_id == call_id, result
    assert result.action in ("accept", "reject", "refer")
    assert [r.url.path.rsplit("/", 2)[1:] for r in sent] == [[call_id, result.action]]
    if result.action == "accept":
        [(started_id, call_input)] = wf.started
        assert started_id == call_id
        # Numbers in the workflow's input are masked: a full caller number never reaches Durable history.
        for value in (call_input["caller"], call_input["dialed"]):
            assert value is None or "***" in value
    else:
        assert not wf.started and result.declined is not None


def body_of(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


@given(EVENTS)
@example({"id": "e", "type": INCOMING, "created_at": 1, "data": {"call_id": "rtc_1", "sip_headers": []}})
@example({"id": "e", "type": INCOMING, "created_at": True, "data": {"call_id": "rtc_1", "sip_headers": []}})
@example({"id": "e", "type": INCOMING, "created_at": 1,
          "data": {"call_id": "rtc_1", "sip_headers": [{"name": "From", "value": "<sip:+1\u0661\u0662@h>"}]}})
def test_any_authentic_event_gets_a_clean_answer(payload: Any) -> None:
    check(body_of(payload), expected(payload))


@given(JSON)
def test_any_authentic_json_value_gets_a_clean_answer(payload: Any) -> None:
    check(body_of(payload), expected(payload))


@given(st.binary(max_size=512))
@example(b"\xff\xfe{")
@example(b"[" * 100_000)
def test_any_authentic_bytes_get_a_clean_answer(body: bytes) -> None:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        kind = "400"
    else:
        kind = expected(payload)
    check(body, kind)


@given(st.lists(HEADER_VALUES, min_size=1, max_size=300))
def test_any_number_of_sip_headers_is_parsed_or_refused(values: list[str]) -> None:
    headers = [{"name": "From", "value": v} for v in values]
    payload = {"id": "e", "type": INCOMING, "created_at": 1, "data": {"call_id": "rtc_x", "sip_headers": headers}}
    check(body_of(payload), "400" if len(headers) > 256 else "call")
