"""Properties of shared/phone.py on arbitrary text: parsing From/To values never raises, E.164 means ASCII digits
only, and a mask never shows more than a short prefix and the last four characters."""

from __future__ import annotations

import unicodedata

from hypothesis import example, given
from hypothesis import strategies as st

from shared import phone

# Every code point hypothesis can make, surrogates included: header values are untrusted text.
ANY_TEXT = st.text(st.characters(codec=None), max_size=300)
ASCII_DIGITS = "0123456789"
# Decimal digits of other scripts ("١", "٣", "७", full-width "３"): str.isdigit() and \d accept them.
NON_ASCII_DIGITS = st.characters(categories=["Nd"]).filter(lambda c: c not in ASCII_DIGITS)
E164_NUMBERS = st.builds(lambda first, rest: f"+{first}{rest}", st.sampled_from("123456789"),
                         st.text(ASCII_DIGITS, min_size=1, max_size=14))


@given(st.none() | ANY_TEXT)
@example("+14255551212")
@example("12345678")
def test_mask_never_raises_and_never_shows_more_than_the_kept_characters(number: str | None) -> None:
    masked = phone.mask(number)
    if number is None:
        assert masked is None
        return
    assert masked is not None
    if masked == "***":
        return
    head, stars, tail = masked.partition("***")
    assert stars and "***" not in tail
    assert number.startswith(head) and number.endswith(tail)
    assert len(tail) == 4 and 2 <= len(head) <= 5
    # At least three characters of the number stay hidden, whatever its length.
    assert len(head) + len(tail) <= len(number) - 3


@given(E164_NUMBERS)
def test_a_masked_e164_number_hides_at_least_three_digits(number: str) -> None:
    masked = phone.mask(number)
    assert masked is not None
    shown = masked.replace("***", "")
    assert sum(c.isdigit() for c in shown) <= sum(c.isdigit() for c in number) - 3 or masked == "***"


@given(st.none() | ANY_TEXT)
@example('"Mallory\\"\r\nX-Injected: 1" <sip:+14255551212@evil>;tag=1')
@example("<sip:+1\u0661\u0662\u0663@host>")
def test_parse_party_never_raises_and_returns_only_clean_values(value: str | None) -> None:
    party = phone.parse_party(value)
    if value is None or len(value) > phone.MAX_HEADER_CHARS:
        assert party is None
        return
    assert party is not None
    if party.number is not None:
        digits = party.number.removeprefix("+")
        assert digits and all(c in ASCII_DIGITS for c in digits)
        assert len(digits) <= 15
    assert party.is_e164 == phone.is_e164(party.number)
    if party.display is not None:
        assert len(party.display) <= phone.MAX_DISPLAY_CHARS
        assert all(unicodedata.category(c) not in phone._UNSAFE_CATEGORIES for c in party.display)
        assert party.display == party.display.strip()
    assert phone.number_from_header(value) == party.number


@given(st.lists(st.sampled_from(ASCII_DIGITS) | NON_ASCII_DIGITS, min_size=2, max_size=15)
       .filter(lambda ds: any(d not in ASCII_DIGITS for d in ds)),
       st.sampled_from(["sip:{n}@host", "<sip:{n}@host>;tag=a", "tel:{n}", '"X" <sips:{n};user=phone@h>']))
def test_non_ascii_digits_are_never_e164_nor_a_number(digits: list[str], template: str) -> None:
    number = "+" + "".join(digits)
    assert not phone.is_e164(number)
    party = phone.parse_party(template.format(n=number))
    assert party is not None and party.number is None and not party.is_e164
    national = phone.parse_party(template.format(n="".join(digits)))
    assert national is not None and national.number is None


@given(E164_NUMBERS, st.text(st.characters(codec="utf-8", exclude_characters='"\\'), max_size=20),
       st.sampled_from(['"{d}" <sip:{n}@pstn.example;user=phone>;tag=9f', "<tel:{n};ext=12>", "sip:{n}@h;tag=x",
                        "<sip:{n};isub=1:pw@h>"]))
def test_a_well_formed_header_yields_its_e164_number(number: str, display: str, template: str) -> None:
    party = phone.parse_party(template.format(n=number, d=display))
    assert party is not None
    assert party.number == number and party.is_e164


@given(E164_NUMBERS, st.lists(st.sampled_from("-.() "), max_size=6), st.data())
def test_visual_separators_in_tel_uris_do_not_change_the_number(number: str, seps: list[str], data) -> None:
    chars = list(number)
    for sep in seps:
        chars.insert(data.draw(st.integers(1, len(chars))), sep)
    assert phone.number_from_uri("tel:" + "".join(chars)) == number
