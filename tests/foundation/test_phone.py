"""Caller/dialed numbers from untrusted SIP From/To values, and masking."""

from __future__ import annotations

import pytest

from shared.phone import is_e164, mask, number_from_header, parse_party


@pytest.mark.parametrize(
    "value, number, e164, display",
    [
        ('"Alice" <sip:+14255551212@sip.example.com>;tag=abc', "+14255551212", True, "Alice"),
        ('"Al \\"The Pal\\" <x>" <sip:+14255551212@h;user=phone>;tag=1', "+14255551212", True, 'Al "The Pal" <x>'),
        ("Bob Smith <sips:+442071234567@trunk.example.net:5061;transport=tls>", "+442071234567", True, "Bob Smith"),
        ("<sip:+18005551212@sip.example.com;user=phone>", "+18005551212", True, None),
        ("sip:+14255551212@10.0.0.1;tag=xyz", "+14255551212", True, None),
        ("tel:+1-425-555-1212", "+14255551212", True, None),
        ("<tel:+1.425.555.1212;ext=22>;tag=9", "+14255551212", True, None),
        ("<tel:+1(425)5551212>", "+14255551212", True, None),
        ("<sip:%2B14255551212@h>", "+14255551212", True, None),
        ("<sip:+14255551212;phone-context=example.com@h>", "+14255551212", True, None),
        ("<sip:4255551212@carrier.example>", "4255551212", False, None),  # national: kept, not E.164
        ("<sip:0044207123@h>", "0044207123", False, None),
        ("SIP:+14255551212@H", "+14255551212", True, None),
    ],
)
def test_numbers_are_parsed(value, number, e164, display):
    party = parse_party(value)
    assert party is not None
    assert (party.number, party.is_e164, party.display) == (number, e164, display)


@pytest.mark.parametrize(
    "value",
    [
        '"Anonymous" <sip:anonymous@anonymous.invalid>;tag=1',
        "<sip:alice@example.com>",
        "<sip:proj_abc123@eastus2.sip.ai.azure.com>",
        "<http://+14255551212@h>",
        "<sip:+0123@h>",  # E.164 never starts with 0
        "<sip:+1234567890123456@h>",  # 16 digits
        "<sip:+١٤٢٥٥٥٥١٢١٢@h>",  # non-ASCII digits
        "<sip:12@h>",
        '"unterminated <sip:+14255551212@h>',
        "<sip:+14255551212@h",
        "",
        "sip:",
        "tel:",
        "<>",
    ],
)
def test_non_numbers_are_none(value):
    assert number_from_header(value) is None


def test_oversized_header_is_rejected_without_parsing():
    value = '"' + "A" * 300 + '" <sip:+14255551212@h>'
    assert parse_party(value) is None
    assert number_from_header(None) is None


def test_display_name_is_sanitised_and_bounded():
    party = parse_party('"Eve\x1b[31m\u202eevil\r\n' + "x" * 100 + '" <sip:+14255551212@h>')
    assert party is not None and party.display is not None
    assert "\x1b" not in party.display and "\u202e" not in party.display and "\n" not in party.display
    assert len(party.display) == 64


def test_is_e164():
    assert is_e164("+14255551212")
    assert not is_e164("14255551212")
    assert not is_e164(None)


@pytest.mark.parametrize(
    "number, masked",
    [
        ("+14255551212", "+1425***1212"),
        ("+442071234567", "+4420***4567"),
        ("+3312345678", "+331***5678"),
        ("4255551212", "425***1212"),
        ("+1234567", "***"),
        ("911", "***"),
        (None, None),
    ],
)
def test_mask(number, masked):
    assert mask(number) == masked


def test_mask_always_hides_at_least_three_characters():
    for n in range(1, 20):
        number = "+" + "7" * n
        out = mask(number)
        assert out is not None
        visible = out.replace("***", "")
        assert visible == "" or len(number) - len(visible) >= 3
        assert visible == "" or (number.startswith(visible[:2]) and number.endswith(visible[-4:]))


def test_display_name_drops_unicode_line_and_paragraph_separators():
    # U+2028/U+2029 are not control characters (category Zl/Zp), but log viewers break lines on them.
    party = parse_party('"Eve\u2028INFO forged\u2029line" <sip:+14255551212@h>')
    assert party is not None and party.display == "EveINFO forgedline"
