"""Amounts typed by people become whole-shilling cents, or a refusal saying what to type."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from invoiceiq.kit.money import (
    AmountError,
    format_kes,
    looks_like_amount,
    parse_amount,
    split_amount,
    to_cents,
    to_shillings,
    vat_cents,
)

MAX = 150_000
shillings = st.integers(min_value=1, max_value=MAX)


@pytest.mark.parametrize(
    "text",
    [
        "1500",
        "1,500",
        "KES 1500",
        "kes1500",
        "Ksh1,500",
        "KSh 1,500",
        "Sh 1500",
        "1500/=",
        "1500/-",
        "1500 /=",
        "1500 KES",
        "1500ksh",
        "Ksh. 1,500",
        "Kshs 1500",
        " 1500 ",
        "1500.",
        "1500.00",
        "1,500.0",
    ],
)
def test_listed_forms_parse_to_cents(text: str) -> None:
    assert parse_amount(text, max_amount=MAX) == 150_000
    assert looks_like_amount(text)


@given(
    n=shillings, form=st.sampled_from(["{n}", "{n:,}", "KES {n}", "Ksh{n:,}", "kes{n}", "{n}/="])
)
def test_every_form_of_n_parses_to_n_shillings(n: int, form: str) -> None:
    assert parse_amount(form.format(n=n), max_amount=MAX) == n * 100


@given(n=shillings)
def test_format_kes_round_trips_through_parse(n: int) -> None:
    assert parse_amount(format_kes(n * 100), max_amount=MAX) == n * 100


@given(n=st.integers(min_value=-10 * MAX, max_value=0), prefix=st.sampled_from(["", "KES "]))
def test_zero_and_negatives_are_refused(n: int, prefix: str) -> None:
    with pytest.raises(AmountError) as caught:
        parse_amount(f"{prefix}{n}", max_amount=MAX)

    assert caught.value.reason == "not_positive"
    assert "at least KSh 1" in caught.value.message


@given(n=st.integers(min_value=0, max_value=MAX), cents=st.integers(min_value=1, max_value=99))
def test_cents_are_refused(n: int, cents: int) -> None:
    with pytest.raises(AmountError) as caught:
        parse_amount(f"{n}.{cents:02d}", max_amount=MAX)

    assert caught.value.reason == "not_whole"
    assert "whole shillings" in caught.value.message


@given(n=st.integers(min_value=MAX + 1, max_value=100 * MAX))
def test_amounts_above_the_maximum_are_refused_naming_it(n: int) -> None:
    with pytest.raises(AmountError) as caught:
        parse_amount(f"{n:,}", max_amount=MAX)

    assert caught.value.reason == "too_large"
    assert "KSh 150,000" in caught.value.message


def test_the_maximum_itself_is_accepted() -> None:
    assert parse_amount("150,000", max_amount=MAX) == 15_000_000
    assert parse_amount("70,000", max_amount=70_000) == 7_000_000
    with pytest.raises(AmountError, match="KSh 70,000"):
        parse_amount("70,001", max_amount=70_000)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "not_a_number"),
        ("cake", "not_a_number"),
        ("KES", "not_a_number"),
        ("1e3", "not_a_number"),
        ("1 500", "not_a_number"),
        ("15OO", "not_a_number"),
        ("1,50,0", "separators"),
        ("15,00", "separators"),
        (",1500", "separators"),
        ("1.500", "separators"),
        ("1.500.000", "separators"),
        ("1500.505", "separators"),
        ("1500.50", "not_whole"),
        ("0.5", "not_whole"),
        ("0", "not_positive"),
        ("-1", "not_positive"),
        ("KES -500", "not_positive"),
        ("-KSh 500", "not_positive"),
        ("150,001", "too_large"),
    ],
)
def test_refusals_have_a_reason(text: str, reason: str) -> None:
    with pytest.raises(AmountError) as caught:
        parse_amount(text, max_amount=MAX)

    assert caught.value.reason == reason
    assert str(caught.value) == caught.value.message


def test_each_refusal_has_its_own_message() -> None:
    messages = set()
    for text in ["cake", "1,50,0", "1500.50", "0", "150,001"]:
        with pytest.raises(AmountError) as caught:
            parse_amount(text, max_amount=MAX)
        messages.add(caught.value.message)

    assert len(messages) == 5


def test_a_maximum_below_one_shilling_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="max_amount"):
        parse_amount("1", max_amount=0)


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("1500", True),
        ("1,50,0", True),
        ("999999999", True),
        ("KES 1500", True),
        ("-5", True),
        ("Cake", False),
        ("KES", False),
        ("2nd", False),
        ("", False),
    ],
)
def test_looks_like_amount(token: str, expected: bool) -> None:
    assert looks_like_amount(token) is expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Jane Doe KES 1,500 Cake", (2, 4)),
        ("Jane Doe Ksh1,500 Cake", (2, 3)),
        ("Jane 500 Cake for 2", (1, 2)),
        # A currency word or `/=` after the number is part of the amount, not the description.
        ("Jane 1,500 KES Cake", (1, 3)),
        ("Jane 1500 /= Cake", (1, 3)),
        ("0712345678 1500 Cake", (0, 1)),
        ("Jane KES cake 200", (3, 4)),
        ("Jane ksh. 200 x", (1, 3)),
        ("Jane Doe Cake", None),
        ("", None),
    ],
)
def test_split_amount_finds_the_first_amount(line: str, expected: tuple[int, int] | None) -> None:
    assert split_amount(line.split()) == expected


def test_split_amount_slice_parses() -> None:
    tokens = ["Jane", "Doe", "KES", "1,500", "Birthday", "cake"]
    span = split_amount(tokens)

    assert span is not None
    start, end = span
    assert tokens[:start] == ["Jane", "Doe"]
    assert parse_amount(" ".join(tokens[start:end]), max_amount=MAX) == 150_000
    assert tokens[end:] == ["Birthday", "cake"]


@pytest.mark.parametrize(
    ("amount", "percent", "expected"),
    [(116_000, 16, 16_000), (100, 16, 13), (150_000, 16, 20_689), (150_000, 0, 0), (0, 16, 0)],
)
def test_vat_is_included_in_the_amount(amount: int, percent: int, expected: int) -> None:
    assert vat_cents(amount, percent) == expected


@given(
    net=st.integers(min_value=0, max_value=10**9), percent=st.integers(min_value=0, max_value=100)
)
def test_vat_of_a_gross_amount_recovers_the_tax(net: int, percent: int) -> None:
    net_cents = net * 100
    gross = net_cents + net_cents * percent // 100

    assert vat_cents(gross, percent) == net_cents * percent // 100


def test_negative_vat_percent_is_refused() -> None:
    with pytest.raises(ValueError, match="vat_percent"):
        vat_cents(100, -1)


@pytest.mark.parametrize(
    ("cents", "text"),
    [
        (150_000, "KSh 1,500"),
        (150_050, "KSh 1,500.50"),
        (5, "KSh 0.05"),
        (0, "KSh 0"),
        (15_000_000, "KSh 150,000"),
        (-150_000, "-KSh 1,500"),
    ],
)
def test_format_kes(cents: int, text: str) -> None:
    assert format_kes(cents) == text


def test_shilling_cent_conversions() -> None:
    assert to_cents(1500) == 150_000
    assert to_shillings(150_000) == 1500
    with pytest.raises(ValueError, match="whole"):
        to_shillings(150_050)
