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
        ('"Alice"<sip:+14255551212@h>', "+14255551212", True, "Alice"),  # no space before the bracket
        ("Sales>Desk <sip:+14255551212@h>", "+14255551212", True, "Sales>Desk"),
        # Header parameters after the bracket may carry '<' and '>' in quoted values: the URI ends at its own '>'.
        ('"Alice" <tel:+14255551212>;info="<urn:x>"', "+14255551212", True, "Alice"),
        ('Bob <tel:+14255551212>;info="<urn:x>"', "+14255551212", True, "Bob"),
        ('<tel:+14255551212>;info="<urn:x>"', "+14255551212", True, None),
        # Every parameter of the user part or of a tel: URI goes, not only the last one.
        ("<sip:+14255551212;isub=22;phone-context=example.com@h>", "+14255551212", True, None),
        ("<tel:+14255551212;ext=22;phone-context=example.com>", "+14255551212", True, None),
        # user:password: everything after the first ':' of the user part is the password.
        ("<sip:+14255551212:secret@h>", "+14255551212", True, None),
        ("<sip:+14255551212:pass:word@h>", "+14255551212", True, None),
        # The user part ends at the first '@'; one in a URI parameter is not the host separator.
        ("<sip:+14255551212@gw.example.com;maddr=a@b>", "+14255551212", True, None),
        ("tel:+1 425 555 1212", "+14255551212", True, None),  # spaces pasted into a tel: URI
        ("<sip:+123456789012345@h>", "+123456789012345", True, None),  # 15 digits: the longest E.164 number
        ("<sip:911@h>", "911", False, None),  # short codes are kept as presented
        ("<sip:123456789012345@h>", "123456789012345", False, None),
        ('"Alice" <>', None, False, "Alice"),  # a display name without a URI: no number
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
        "<sip:+1٤٢٥٥٥٥١٢١٢@h>",  # non-ASCII digits after an ASCII first digit
        "<sip:+142555512١٢@h>",
        "<sip:%2B1%D9%A4%D9%A25551212@h>",  # the same, percent-encoded
        "<sip:٤٢٥٥٥٥١٢١٢@h>",  # a national number in non-ASCII digits
        "<sip:1234567890123456@h>",  # 16 digits is no national number either
        "<sip:+1@h>",  # a country code alone
        '"Alice" <sip:+14255551212@h',  # the bracket is never closed
        '"Alice \\',  # an unterminated quote ending in a backslash
        # A bare URI ends at its first ';' (RFC 3261 §20.10: one with parameters needs the <...> form).
        "sip:+14255551212;user=phone@h;tag=1",
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


@pytest.mark.parametrize("template", ["sip:+14255551212@{}", "<sip:+14255551212@{}>", '"A" <tel:+14255551212;x={}>'])
def test_a_header_of_256_characters_is_parsed_and_one_of_257_is_not(template):
    at_limit = template.format("h" * (256 - len(template.format(""))))
    assert len(at_limit) == 256
    assert number_from_header(at_limit) == "+14255551212"
    assert number_from_header(at_limit[:-1] + "h" + at_limit[-1]) is None


def test_number_from_header_reads_the_number():
    assert number_from_header('"Alice" <sip:+14255551212@sip.example.com>;tag=abc') == "+14255551212"
    assert number_from_header("<sip:4255551212@carrier.example>") == "4255551212"


def test_display_name_is_sanitised_and_bounded():
    party = parse_party('"Eve\x1b[31m\u202eevil\r\n' + "x" * 100 + '" <sip:+14255551212@h>')
    assert party is not None and party.display is not None
    assert "\x1b" not in party.display and "\u202e" not in party.display and "\n" not in party.display
    assert len(party.display) == 64


def test_is_e164():
    assert is_e164("+14255551212")
    assert is_e164("+123456789012345")
    assert not is_e164("14255551212")
    assert not is_e164(None)
    assert not is_e164("+1")
    assert not is_e164("+1234567890123456")
    assert not is_e164("+04255551212")
    assert not is_e164("+1٤٢٥٥٥٥١٢١٢")  # non-ASCII digits in any position
    assert not is_e164("+١٤٢٥٥٥٥١٢١٢")


@pytest.mark.parametrize(
    "number, masked",
    [
        ("+14255551212", "+1425***1212"),
        ("+442071234567", "+4420***4567"),
        ("+3312345678", "+331***5678"),
        ("4255551212", "425***1212"),
        ("+12345678", "+1***5678"),  # 9 characters: the shortest that shows anything
        ("+1234567", "***"),
        ("+1" + "2" * 254, "+1222***2222"),  # 256 characters: still masked like a number
        ("+1" + "2" * 255, "***"),  # over the header limit: not a number we parsed
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


def test_display_name_drops_private_use_unassigned_and_surrogate_characters():
    # Private use (Co), unassigned (Cn) and lone surrogates (Cs) render as anything or nothing in a log viewer.
    party = parse_party('"A\ue000l\u0378i\ud800ce" <sip:+14255551212@h>')
    assert party is not None and party.display == "Alice"
