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


# ------------------------------------------------------------------------- signature and timestamp edges


def test_a_correct_digest_under_another_label_than_v1_is_refused(secret):
    body = incoming_body()
    headers = signed_headers(secret, body)
    digest = headers["webhook-signature"].removeprefix("v1,")
    for label in ("v2,", "v1a,", ",", "V1,", "v1"):
        with pytest.raises(WebhookVerificationError) as refused:
            verify((secret,), body, {**headers, "webhook-signature": label + digest})
        assert refused.value.reason == "no v1 signature in webhook-signature"
    assert verify((secret,), body, {**headers, "webhook-signature": "v1," + digest}) == "wh_1"


def test_a_signature_header_with_undecodable_bytes_is_refused_not_a_crash(secret):
    # Hosts that decode header bytes with surrogateescape (aiohttp) hand over lone surrogates.
    body = incoming_body()
    headers = signed_headers(secret, body)
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify((secret,), body, {**headers, "webhook-signature": "v1,\udcff\udcfe"})
    mixed = f"v1,\udcff {headers['webhook-signature']}"
    assert verify((secret,), body, {**headers, "webhook-signature": mixed}) == "wh_1"


def test_a_webhook_id_with_undecodable_bytes_is_refused_and_a_non_ascii_one_verifies(secret):
    body = incoming_body()
    headers = signed_headers(secret, body)
    with pytest.raises(WebhookVerificationError) as refused:
        verify((secret,), body, {**headers, "webhook-id": "wh_\udcff"})
    assert refused.value.reason == "bad webhook-id: not UTF-8 text"
    assert verify((secret,), body, signed_headers(secret, body, msg_id="wh_ü")) == "wh_ü"


def test_at_most_16_signatures_are_compared(secret):
    body = incoming_body()
    headers = signed_headers(secret, body)
    decoy = sign(new_secret(), "wh_1", int(headers["webhook-timestamp"]), body)
    sixteenth = " ".join([decoy] * 15 + [headers["webhook-signature"]])
    assert verify((secret,), body, {**headers, "webhook-signature": sixteenth}) == "wh_1"
    seventeenth = " ".join([decoy] * 16 + [headers["webhook-signature"]])
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify((secret,), body, {**headers, "webhook-signature": seventeenth})


def test_every_missing_header_is_named_and_a_blank_one_counts_as_missing(secret):
    body = incoming_body()
    with pytest.raises(WebhookVerificationError) as refused:
        verify((secret,), body, {"webhook-timestamp": str(int(time.time())), "webhook-id": "  "})
    assert refused.value.reason == "missing header(s): webhook-id, webhook-signature"
    assert str(refused.value) == refused.value.reason


@pytest.mark.parametrize(
    "ts, reason",
    [
        ("9" * 12, "future timestamp: newer than the tolerance"),  # 12 digits: well-formed, far in the future
        ("1" + "0" * 12, "bad timestamp: not an integer number of seconds"),  # 13 digits: not a timestamp
        ("0", "stale timestamp: older than the tolerance"),
        ("-1", "bad timestamp: not an integer number of seconds"),
    ],
)
def test_timestamps_are_up_to_12_ascii_digits(secret, ts, reason):
    body = incoming_body()
    headers = {**signed_headers(secret, body), "webhook-timestamp": ts}
    with pytest.raises(WebhookVerificationError) as refused:
        verify((secret,), body, headers)
    assert refused.value.reason == reason


def test_a_verifier_needs_a_secret():
    with pytest.raises(ValueError, match="at least one webhook secret is required"):
        WebhookVerifier(())


def test_secrets_decode_with_or_without_padding_and_refuse_what_is_not_base64():
    assert secret_key("whsec_QUJDREU=") == secret_key("whsec_QUJDREU") == b"ABCDE"  # 7 characters: one '=' missing
    assert secret_key("whsec_QUI") == b"AB"
    with pytest.raises(ValueError, match="webhook secret is not base64 after 'whsec_'"):
        secret_key("whsec_QUJD!RA==")  # a stray character is refused, not skipped
    with pytest.raises(ValueError, match="webhook secret must start with 'whsec_'"):
        secret_key("QUJDRA==")


def test_a_text_body_is_signed_like_its_utf8_bytes(secret):
    text = '{"note": "café"}'
    assert sign(secret, "wh_1", 1_800_000_000, text) == sign(secret, "wh_1", 1_800_000_000, text.encode())


# ---------------------------------------------------------------------------------------- event parsing


def _event(data: object, **fields: object) -> bytes:
    payload = {"id": "evt_1", "type": "realtime.call.incoming", "created_at": 1_750_287_078, "data": data}
    return json.dumps({**payload, **fields}).encode()


def test_parse_event_keeps_every_field_and_a_read_only_data():
    event = parse_event(_event({"call_id": "rtc_1", "sip_headers": []}), "wh_9")
    assert (event.webhook_id, event.event_id, event.type, event.created_at) == (
        "wh_9", "evt_1", "realtime.call.incoming", 1_750_287_078)
    assert dict(event.data) == {"call_id": "rtc_1", "sip_headers": []}
    with pytest.raises(TypeError):
        event.data["call_id"] = "rtc_2"  # type: ignore[index]


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"id": ""}, "id: expected a non-empty string"),
        ({"id": 5}, "id: expected a non-empty string"),
        ({"type": ""}, "type: expected a non-empty string"),
        ({"type": 5}, "type: expected a non-empty string"),
        ({"created_at": 1.5}, "created_at: expected an integer"),
        ({"data": "x"}, "data: expected an object"),
    ],
)
def test_an_event_with_an_empty_or_mistyped_field_is_refused(fields, message):
    with pytest.raises(WebhookPayloadError, match=f"^{message}$"):
        parse_event(_event(**{"data": {}, **fields}), "wh_1")


def test_the_incoming_call_keeps_the_event_id_and_time():
    call = parse_incoming_call(parse_event(_event({"call_id": "rtc_1", "sip_headers": []}), "wh_9"))
    assert (call.call_id, call.webhook_id, call.event_id, call.created_at) == (
        "rtc_1", "wh_9", "evt_1", 1_750_287_078)
    assert (call.caller, call.dialed, call.caller_display, call.caller_is_e164, call.dialed_is_e164) == (
        None, None, None, False, False)


def test_another_event_type_is_not_an_incoming_call():
    with pytest.raises(WebhookPayloadError, match="^type: expected 'realtime.call.incoming'$"):
        parse_incoming_call(parse_event(_event({}, type="realtime.call.ended"), "wh_1"))


@pytest.mark.parametrize("call_id", ["r", "rtc_u1-9.c", "R" * 128, "0abc"])
def test_call_ids_of_letters_digits_and_separators_are_accepted(call_id):
    assert parse_incoming_call(parse_event(_event({"call_id": call_id, "sip_headers": []}), "w")).call_id == call_id


@pytest.mark.parametrize("call_id", ["R" * 129, "_rtc", "-rtc", ".rtc", "", "rtc/1", "rtcé", "rtc١", 7])
def test_call_ids_that_could_escape_a_path_or_an_instance_id_are_refused(call_id):
    with pytest.raises(WebhookPayloadError, match="data.call_id"):
        parse_incoming_call(parse_event(_event({"call_id": call_id, "sip_headers": []}), "w"))


def test_up_to_256_sip_headers_are_read_and_more_are_refused():
    headers = [{"name": "X-H", "value": str(i)} for i in range(256)]
    call = parse_incoming_call(parse_event(_event({"call_id": "rtc_1", "sip_headers": headers}), "w"))
    assert len(call.sip_headers) == 256 and call.header("x-h") == "0"
    more = headers + [{"name": "X-H", "value": "256"}]
    with pytest.raises(WebhookPayloadError, match=r"^data.sip_headers: more than 256 entries$"):
        parse_incoming_call(parse_event(_event({"call_id": "rtc_1", "sip_headers": more}), "w"))


def _call_with(*headers: tuple[str, str]) -> IncomingCall:
    data = {"call_id": "rtc_1", "sip_headers": [{"name": n, "value": v} for n, v in headers]}
    return parse_incoming_call(parse_event(_event(data), "wh_1"))


@pytest.mark.parametrize("name", ["f", "F", " f "])
def test_a_caller_in_a_compact_from_header_is_known(name):
    call = _call_with((name, '"Eve" <sip:+19005551212@h>'), ("To", "<sip:+18005551212@h>"))
    assert (call.caller, call.caller_is_e164, call.caller_display) == ("+19005551212", True, "Eve")


@pytest.mark.parametrize("name", ["t", "T"])
def test_a_dialed_number_in_a_compact_to_header_is_known(name):
    call = _call_with(("From", "<sip:+14255551212@h>"), (name, "<sip:+18005551212@h>"))
    assert (call.dialed, call.dialed_is_e164) == ("+18005551212", True)


def test_an_invite_without_a_to_header_has_no_dialed_number():
    call = _call_with(("From", "<sip:+14255551212@h>"))
    assert (call.caller, call.dialed, call.dialed_is_e164) == ("+14255551212", None, False)


def test_a_national_dialed_number_is_kept_but_not_e164():
    call = _call_with(("From", "<sip:4255551212@h>"), ("To", "<sip:8005551212@h>"))
    assert (call.caller, call.caller_is_e164, call.dialed, call.dialed_is_e164) == (
        "4255551212", False, "8005551212", False)


def test_the_first_from_header_is_the_caller():
    call = _call_with(("f", "<sip:+14255551212@h>"), ("From", "<sip:+19005551212@h>"))
    assert call.caller == "+14255551212"
