"""Standard Webhooks verification: rejection reasons, rotation, and interop with openai and standardwebhooks."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import openai
import pytest
import standardwebhooks

from shared.webhook import (
    IncomingCall,
    WebhookPayloadError,
    WebhookVerificationError,
    WebhookVerifier,
    parse_event,
    parse_incoming_call,
    secret_key,
    sign,
    verify,
)

from .conftest import incoming_body, new_secret, signed_headers


def test_valid_delivery_returns_the_webhook_id(secret):
    body = incoming_body()
    assert verify((secret,), body, signed_headers(secret, body, msg_id="wh_abc")) == "wh_abc"


def test_header_names_are_case_insensitive(secret):
    body = incoming_body()
    headers = {k.title(): v for k, v in signed_headers(secret, body).items()}
    assert "Webhook-Signature" in headers
    assert verify((secret,), body, headers) == "wh_1"


@pytest.mark.parametrize("drop", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_is_rejected_and_named(secret, drop):
    body = incoming_body()
    headers = signed_headers(secret, body)
    del headers[drop]
    with pytest.raises(WebhookVerificationError, match=f"missing header.*{drop}"):
        verify((secret,), body, headers)


@pytest.mark.parametrize("ts", ["abc", "1.5", "+1750287078", " ", "-5", "１７５０２８７０７８"])
def test_malformed_timestamp_is_rejected(secret, ts):
    body = incoming_body()
    headers = signed_headers(secret, body)
    headers["webhook-timestamp"] = ts
    with pytest.raises(WebhookVerificationError, match="bad timestamp|missing header"):
        verify((secret,), body, headers)


def test_timestamp_tolerance_is_300_seconds_both_ways(secret):
    body = incoming_body()
    now = 1_800_000_000
    for ts in (now - 300, now + 300):
        assert verify((secret,), body, signed_headers(secret, body, ts=ts), now=now)
    with pytest.raises(WebhookVerificationError, match="stale"):
        verify((secret,), body, signed_headers(secret, body, ts=now - 301), now=now)
    with pytest.raises(WebhookVerificationError, match="future"):
        verify((secret,), body, signed_headers(secret, body, ts=now + 301), now=now)


def test_signature_covers_exact_bytes(secret):
    body = incoming_body()
    headers = signed_headers(secret, body)
    reserialised = json.dumps(json.loads(body)).encode()  # same JSON, different bytes (spaces)
    assert reserialised != body
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify((secret,), reserialised, headers)


def test_signature_covers_id_and_timestamp(secret):
    body = incoming_body()
    headers = signed_headers(secret, body, msg_id="wh_1")
    with pytest.raises(WebhookVerificationError, match="no matching"):
        verify((secret,), body, {**headers, "webhook-id": "wh_2"})
    with pytest.raises(WebhookVerificationError, match="no matching"):
        verify((secret,), body, {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) - 1)})


def test_wrong_secret_and_garbage_signatures_are_rejected(secret):
    body = incoming_body()
    headers = signed_headers(new_secret(), body)
    with pytest.raises(WebhookVerificationError, match="no matching"):
        verify((secret,), body, headers)
    for garbage in ("v1,", "v2," + sign(secret, "wh_1", 1, body)[3:], "nonsense", "v1,ü∂ß", ""):
        headers["webhook-signature"] = garbage
        with pytest.raises(WebhookVerificationError):
            verify((secret,), body, headers)


def test_any_of_several_signatures_passes(secret):
    body = incoming_body()
    headers = signed_headers(secret, body)
    decoy = sign(new_secret(), "wh_1", int(headers["webhook-timestamp"]), body)
    headers["webhook-signature"] = f"v1a,xyz {decoy} {headers['webhook-signature']}"
    assert verify((secret,), body, headers) == "wh_1"


def test_rotation_accepts_current_and_previous_secret(secret):
    previous = new_secret()
    verifier = WebhookVerifier((secret, previous))
    body = incoming_body()
    assert verifier.verify(body, signed_headers(previous, body)) == "wh_1"
    assert verifier.verify(body, signed_headers(secret, body)) == "wh_1"
    with pytest.raises(WebhookVerificationError):
        verifier.verify(body, signed_headers(new_secret(), body))


def test_secret_without_padding_decodes_like_padded():
    padded = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # 24 bytes -> no padding either way
    assert secret_key(padded) == secret_key(padded.rstrip("="))
    odd = "whsec_" + "QUJD" + "RA=="  # "ABCD"
    assert secret_key(odd) == secret_key(odd.rstrip("=")) == b"ABCD"
    with pytest.raises(ValueError):
        secret_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")


# ------------------------------------------------------------------------------------ interop, both ways


def test_standardwebhooks_signature_verifies_with_ours(secret):
    body = incoming_body()
    ts = int(time.time())
    header = standardwebhooks.Webhook(secret).sign("wh_x", datetime.fromtimestamp(ts, tz=UTC), body.decode())
    headers = {"webhook-id": "wh_x", "webhook-timestamp": str(ts), "webhook-signature": header}
    assert verify((secret,), body, headers) == "wh_x"
    assert header == sign(secret, "wh_x", ts, body)


def test_our_signature_verifies_with_standardwebhooks_and_openai(secret):
    body = incoming_body()
    headers = signed_headers(secret, body, msg_id="wh_y")
    assert standardwebhooks.Webhook(secret).verify(body, headers)["data"]["call_id"].startswith("rtc_")
    event = openai.OpenAI(api_key="x", webhook_secret=secret).webhooks.unwrap(body, headers)
    assert event.type == "realtime.call.incoming"
    assert event.data.call_id == json.loads(body)["data"]["call_id"]


def test_openai_rejects_what_we_reject(secret):
    # Same verdict as the SDK on a tampered body: we are not more lenient than the reference.
    body = incoming_body()
    headers = signed_headers(secret, body)
    tampered = body.replace(b"+1425", b"+1426")
    with pytest.raises(openai.InvalidWebhookSignatureError):
        openai.OpenAI(api_key="x", webhook_secret=secret).webhooks.unwrap(tampered, headers)
    with pytest.raises(WebhookVerificationError):
        verify((secret,), tampered, headers)


# --------------------------------------------------------------------------------------------- parsing


def test_parse_incoming_call():
    body = incoming_body(extra_headers=[{"name": "X-Customer-Id", "value": "42"}])
    call = parse_incoming_call(parse_event(body, "wh_1"))
    assert isinstance(call, IncomingCall)
    assert call.call_id == "rtc_u1_9c6574da8b8a41a18da9308f4ad974ce"
    assert call.webhook_id == "wh_1"
    assert call.caller == "+14255551212" and call.caller_is_e164
    assert call.dialed == "+18005551212" and call.dialed_is_e164
    assert call.caller_display == "Alice"
    assert call.header("x-customer-id") == "42"
    assert call.sip_headers[0] == ("From", '"Alice" <sip:+14255551212@sip.example.com>;tag=abc')


def test_compact_header_names_and_missing_from():
    body = json.dumps({"id": "evt_1", "type": "realtime.call.incoming", "created_at": 1, "data": {
        "call_id": "rtc_1", "sip_headers": [{"name": "t", "value": "tel:+1-800-555-1212"}]}}).encode()
    call = parse_incoming_call(parse_event(body, "wh_1"))
    assert call.caller is None and call.caller_display is None and not call.caller_is_e164
    assert call.dialed == "+18005551212"


@pytest.mark.parametrize(
    "body, field",
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"type": "realtime.call.incoming", "created_at": 1, "data": {}}', "id:"),
        (b'{"id": "e", "created_at": 1, "data": {}}', "type:"),
        (b'{"id": "e", "type": "t", "created_at": "1", "data": {}}', "created_at:"),
        (b'{"id": "e", "type": "t", "created_at": true, "data": {}}', "created_at:"),
        (b'{"id": "e", "type": "t", "created_at": 1, "data": []}', "data:"),
    ],
)
def test_malformed_events(body, field):
    with pytest.raises(WebhookPayloadError, match=field):
        parse_event(body, "wh_1")


@pytest.mark.parametrize(
    "data, field",
    [
        ({"sip_headers": []}, "data.call_id"),
        ({"call_id": "../../admin", "sip_headers": []}, "data.call_id"),
        ({"call_id": "rtc_1 x", "sip_headers": []}, "data.call_id"),
        ({"call_id": "r" * 200, "sip_headers": []}, "data.call_id"),
        ({"call_id": "rtc_1"}, "data.sip_headers"),
        ({"call_id": "rtc_1", "sip_headers": [{"name": "From"}]}, r"data.sip_headers\[0\]"),
        ({"call_id": "rtc_1", "sip_headers": ["From: x"]}, r"data.sip_headers\[0\]"),
    ],
)
def test_malformed_incoming_call(data, field):
    event = parse_event(
        json.dumps({"id": "e", "type": "realtime.call.incoming", "created_at": 1, "data": data}).encode(), "w"
    )
    with pytest.raises(WebhookPayloadError, match=field):
        parse_incoming_call(event)


def test_header_lookup_is_case_insensitive_and_returns_the_first():
    body = incoming_body(extra_headers=[{"name": "X-Tag", "value": "one"}, {"name": "x-tag", "value": "two"}])
    call = parse_incoming_call(parse_event(body, "wh_1"))
    assert call.header("X-TAG") == "one"
    assert call.header("x-missing") is None


def test_deeply_nested_json_is_a_payload_error_not_a_recursion_error():
    with pytest.raises(WebhookPayloadError, match="not JSON"):
        parse_event(b"[" * 100_000 + b"]" * 100_000, "wh_1")
