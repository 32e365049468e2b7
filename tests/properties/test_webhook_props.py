"""Properties of shared/webhook.py: a signature over any bytes verifies, any tampering of the body, the id, the
timestamp or the signature is refused, and arbitrary headers only ever raise WebhookVerificationError."""

from __future__ import annotations

import base64

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from shared.webhook import WebhookVerificationError, WebhookVerifier, sign

SECRET = "whsec_" + base64.b64encode(b"property-test-key-32-bytes-long!").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"another-key-of-thirty-two-bytes!").decode()
NOW = 1_760_000_000
BODIES = st.binary(max_size=2048)
# Header values reach us as text; an id is any text without surrounding whitespace (the verifier strips it).
IDS = st.text(st.characters(codec="utf-8"), min_size=1, max_size=64).filter(lambda s: s == s.strip() and s)
TIMESTAMPS = st.integers(NOW - 300, NOW + 300)


def verifier() -> WebhookVerifier:
    return WebhookVerifier([OTHER_SECRET, SECRET], now=lambda: NOW)


def headers(msg_id: str, ts: int | str, sig: str) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}


@given(BODIES, IDS, TIMESTAMPS)
@example(b"", "x", NOW)
@example(b"\xff\xfe\x00{not json", "wh_\u00e9\u4e2d", NOW - 300)
def test_a_valid_signature_over_any_bytes_verifies(body: bytes, msg_id: str, ts: int) -> None:
    assert verifier().verify(body, headers(msg_id, ts, sign(SECRET, msg_id, ts, body))) == msg_id
    # Header names are case-insensitive, and several signatures may be offered (rotation).
    mixed = {"Webhook-Id": msg_id, "WEBHOOK-TIMESTAMP": str(ts),
             "Webhook-Signature": f"v1,bm90LWl0 {sign(SECRET, msg_id, ts, body)}"}
    assert verifier().verify(body, mixed) == msg_id


@given(BODIES, IDS, TIMESTAMPS, st.data())
def test_any_tampering_is_refused(body: bytes, msg_id: str, ts: int, data) -> None:
    sig = sign(SECRET, msg_id, ts, body)
    what = data.draw(st.sampled_from(["body", "id", "timestamp", "signature", "secret"]))
    if what == "body":
        if body and data.draw(st.booleans()):
            i = data.draw(st.integers(0, len(body) - 1))
            bit = 1 << data.draw(st.integers(0, 7))
            body = body[:i] + bytes([body[i] ^ bit]) + body[i + 1:]
        else:
            body = body + data.draw(st.binary(min_size=1, max_size=8))
    elif what == "id":
        msg_id = data.draw(IDS.filter(lambda other: other != msg_id))
    elif what == "timestamp":
        ts = data.draw(TIMESTAMPS.filter(lambda other: other != ts))
    elif what == "signature":
        value = sig.removeprefix("v1,")
        i = data.draw(st.integers(0, len(value) - 1))
        char = data.draw(st.characters(codec="utf-8").filter(lambda c: c != value[i]))
        sig = "v1," + value[:i] + char + value[i + 1:]
    else:
        sig = sign("whsec_" + base64.b64encode(b"a key nobody configured").decode(), msg_id, ts, body)
    with pytest.raises(WebhookVerificationError):
        verifier().verify(body, headers(msg_id, ts, sig))


@given(BODIES, IDS, st.integers(-(10**15), 10**15).filter(lambda t: abs(t - NOW) > 300))
def test_a_stale_or_future_timestamp_is_refused_even_when_signed(body: bytes, msg_id: str, ts: int) -> None:
    with pytest.raises(WebhookVerificationError):
        verifier().verify(body, headers(msg_id, ts, sign(SECRET, msg_id, abs(ts), body)))


HEADER_NAMES = st.sampled_from(["webhook-id", "Webhook-Timestamp", "WEBHOOK-SIGNATURE", "content-type"]) | st.text(
    max_size=20)
# Any code point, surrogates included: whatever the host hands us as a str.
HEADER_VALUES = st.text(st.characters(codec=None), max_size=200) | st.builds(
    lambda n: f"v1,{n}", st.text(st.characters(codec=None), max_size=60)) | st.integers(NOW - 400, NOW + 400).map(str)


@given(BODIES, st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=6))
@example(b"{}", {"webhook-id": "\ud800", "webhook-timestamp": str(NOW), "webhook-signature": "v1,\udfff"})
@example(b"{}", {"webhook-id": "a", "webhook-timestamp": "\uff11", "webhook-signature": "v1,x"})
@example(b"{}", {"webhook-id": "a", "webhook-timestamp": str(NOW), "webhook-signature": " ".join(["v1,x"] * 10_000)})
def test_arbitrary_headers_raise_only_the_verification_error(body: bytes, hdrs: dict[str, str]) -> None:
    try:
        msg_id = verifier().verify(body, hdrs)
    except WebhookVerificationError as exc:
        assert exc.reason  # a reason, safe to log
    else:  # only possible if hypothesis forged an HMAC, which would be its own finding
        pytest.fail(f"forged delivery verified: {msg_id!r}")
