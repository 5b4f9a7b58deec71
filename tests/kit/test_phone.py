"""Kenyan mobile numbers: every accepted spelling normalises alike; others are refused plainly."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from invoiceiq.kit.phone import (
    PHONE_PATTERN,
    PhoneError,
    is_msisdn,
    mask_msisdn,
    mask_phones_in_text,
    normalize_msisdn,
)


def _digits(length: int) -> st.SearchStrategy[str]:
    return st.text(alphabet="0123456789", min_size=length, max_size=length)


# National significant numbers of real M-PESA ranges: 07xx (all of 70–79), 010x and 011x.
nationals = st.one_of(
    st.builds(lambda rest: "7" + rest, _digits(8)),
    st.builds(lambda d, rest: "11" + d + rest, st.sampled_from("012345"), _digits(6)),
    st.builds(lambda d, rest: "10" + d + rest, st.sampled_from("012"), _digits(6)),
)
separators = st.sampled_from(["", "", " ", "-", "  ", " - "])


@st.composite
def spelled(draw: st.DrawFn, national: str) -> str:
    """One way a person might type `national`: a prefix, then digits with random separators."""
    prefix = draw(st.sampled_from(["0", "+254", "254", "+254 ", "+254 0"]))
    body = "".join(digit + draw(separators) for digit in national[:-1]) + national[-1]
    return draw(st.sampled_from(["", " "])) + prefix + body + draw(st.sampled_from(["", " "]))


@given(data=st.data(), national=nationals)
def test_every_spelling_of_a_mobile_normalises_to_the_same_digits(
    data: st.DataObject, national: str
) -> None:
    first = data.draw(spelled(national))
    second = data.draw(spelled(national))

    assert normalize_msisdn(first) == "254" + national
    assert normalize_msisdn(second) == normalize_msisdn(first)
    assert is_msisdn(first)


@given(national=nationals)
def test_normalised_numbers_are_12_digits_and_stable(national: str) -> None:
    msisdn = normalize_msisdn("0" + national)

    assert re.fullmatch(r"254[17][0-9]{8}", msisdn)
    assert normalize_msisdn(msisdn) == msisdn
    assert normalize_msisdn("+" + msisdn) == msisdn


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0712345678", "254712345678"),
        ("0110345678", "254110345678"),
        ("0101234567", "254101234567"),
        ("+254 712 345 678", "254712345678"),
        ("254-712-345-678", "254712345678"),
        ("(0712) 345.678", "254712345678"),
        ("254110345678", "254110345678"),
        ("+254 (0) 712 345678", "254712345678"),
        ("(+254)712345678", "254712345678"),
        # Copied from a phone's contacts: wrapped in direction marks, no-break spaces.
        ("\u202a+254 712 345 678\u202c", "254712345678"),
        ("+254\u00a0712\u00a0345\u00a0678", "254712345678"),
        ("\u200e0712345678", "254712345678"),
    ],
)
def test_known_spellings(raw: str, expected: str) -> None:
    assert normalize_msisdn(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("0712abc678", "letters"),
        ("call me", "letters"),
        ("0712345678 ext 2", "letters"),
        ("++254712345678", "invalid"),
        ("0712", "too_short"),
        ("071234567", "too_short"),
        ("+254 712 345", "too_short"),
        ("07123456789", "too_long"),
        ("+254 7123 456 789", "too_long"),
        ("020 2222222", "landline"),
        ("+254 20 2222222", "landline"),
        ("041 2222222", "landline"),
        ("0800 123456", "not_mobile"),
        ("0122345678", "not_mobile"),
        ("+255 712 345 678", "not_kenyan"),
        ("255712345678", "not_kenyan"),
        ("00255712345678", "not_kenyan"),
        ("+1 212 555 1234", "not_kenyan"),
        ("+44 20 7946 0958", "not_kenyan"),
    ],
)
def test_refusals_say_what_to_type(raw: str, reason: str) -> None:
    with pytest.raises(PhoneError) as caught:
        normalize_msisdn(raw)

    assert caught.value.reason == reason
    assert "0712345678" in caught.value.message
    assert str(caught.value) == caught.value.message
    assert not is_msisdn(raw)


def test_refusal_messages_differ_by_reason() -> None:
    messages = set()
    for raw in ["", "07ab", "0712", "07123456789", "020 2222222", "+255712345678"]:
        with pytest.raises(PhoneError) as caught:
            normalize_msisdn(raw)
        messages.add(caught.value.message)

    assert len(messages) == 6


@given(country=st.sampled_from(["1", "44", "255", "256", "27"]), rest=_digits(9))
def test_foreign_numbers_are_refused_as_not_kenyan(country: str, rest: str) -> None:
    with pytest.raises(PhoneError) as caught:
        normalize_msisdn(f"+{country} {rest}")

    assert caught.value.reason == "not_kenyan"


@given(length=st.integers(min_value=1, max_value=8), data=st.data())
def test_short_numbers_are_refused(length: int, data: st.DataObject) -> None:
    raw = "07" + data.draw(_digits(length - 1)) if length > 1 else "0"

    with pytest.raises(PhoneError):
        normalize_msisdn(raw)


def test_mask_keeps_four_leading_and_three_trailing_digits() -> None:
    assert mask_msisdn("254712345678") == "2547•••••678"
    assert mask_msisdn("254110345678") == "2541•••••678"


@given(national=nationals)
def test_mask_hides_the_middle_of_every_number(national: str) -> None:
    msisdn = "254" + national
    masked = mask_msisdn(msisdn)

    assert len(masked) == len(msisdn)
    assert masked[:4] == msisdn[:4]
    assert masked[-3:] == msisdn[-3:]
    assert masked[4:-3] == "•" * 5


@pytest.mark.parametrize(
    ("short", "expected"),
    [("", ""), ("1234", "••••"), ("12345678", "••••••78"), ("0712345678", "0712•••678")],
)
def test_mask_of_short_strings_reveals_less(short: str, expected: str) -> None:
    assert mask_msisdn(short) == expected


@given(data=st.data(), national=nationals)
def test_mask_phones_in_text_removes_full_numbers(data: st.DataObject, national: str) -> None:
    phone = data.draw(spelled(national)).strip()
    before, after = "Invoice INV7K3QX9A sent to ", ", KSh 1,500."

    masked = mask_phones_in_text(before + phone + after)

    assert masked.startswith(before)
    assert masked.endswith(after)
    shown = masked[len(before) : -len(after)]
    assert national not in re.sub(r"\D", "", shown)
    assert shown.count("•") >= 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("from 254712345678 ok", "from 2547•••••678 ok"),
        ("from +254 712 345 678.", "from +2547•••••678."),
        ("msisdn=254712345678&x=1", "msisdn=2547•••••678&x=1"),
        ("a 0712345678 and b 0110345678", "a 0712•••678 and b 0110•••678"),
        ("to 0712-345-678-", "to 0712•••678-"),
        ("2024-11-26 12:51:03 to=254712345678", "2024-11-26 12:51:03 to=2547•••••678"),
        ("KSh 1500 254712345678", "KSh 1500 2547•••••678"),
    ],
)
def test_mask_phones_in_text_examples(text: str, expected: str) -> None:
    assert mask_phones_in_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "amount 150000 cents",
        "job 9f1c2d3e-4b5a-6789-0abc-def012345678 done",
        "2024-11-26 12:51:03,123 INFO sent",
        "on 2024-11-26T12:51:03Z",
        "host 192.168.100.200",
        "invoice INV7K3QX9A",
        "CheckoutRequestID ws_CO_191220191020363925",
    ],
)
def test_mask_phones_in_text_leaves_other_numbers(text: str) -> None:
    assert mask_phones_in_text(text) == text


def test_phone_pattern_finds_phone_spellings() -> None:
    text = "call 0712 345 678 or +254-712-345-678 today, not 150000 or INV7K3QX9A"

    found = [match.group() for match in PHONE_PATTERN.finditer(text)]

    assert found == ["0712 345 678", "+254-712-345-678"]
