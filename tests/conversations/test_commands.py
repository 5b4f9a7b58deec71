"""The merchant command grammar of DESIGN §5."""

from __future__ import annotations

import re

import pytest

from invoiceiq.conversations import guided
from invoiceiq.conversations.commands import (
    MAX_NAME_READINGS,
    CommandError,
    Help,
    InvoiceAction,
    NameReading,
    OneLineInvoice,
    SavedNameInvoice,
    SetName,
    SetVat,
    StartGuided,
    Unknown,
    Unpaid,
    parse_command,
)

MAX = 150_000


def parse(text: str) -> object:
    return parse_command(text, max_amount=MAX)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("help", Help()),
        ("  HELP ", Help()),
        ("invoice", StartGuided()),
        ("Invoice", StartGuided()),
        ("unpaid", Unpaid()),
        ("status inv7k3qx9a", InvoiceAction("status", "INV7K3QX9A")),
        ("CANCEL   INV7K3QX9A", InvoiceAction("cancel", "INV7K3QX9A")),
        ("remind INV7K3QX9A", InvoiceAction("remind", "INV7K3QX9A")),
        # Crockford base32 has no O, I or L: read as the digits they look like.
        ("status INV7K3QXOA", InvoiceAction("status", "INV7K3QX0A")),
        ("status invik3lxoa", InvoiceAction("status", "INV1K31X0A")),
        ("cancel INV7K3QX9A.", InvoiceAction("cancel", "INV7K3QX9A")),
        ("remind *INV7K3QX9A*", InvoiceAction("remind", "INV7K3QX9A")),
        ("name  Wanjiku   Designs ", SetName("Wanjiku Designs")),
        ("vat ON", SetVat(True)),
        ("vat off", SetVat(False)),
        ("hello there", Unknown()),
        ("", Unknown()),
    ],
)
def test_commands(text: str, expected: object) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    "phone",
    [
        "0712345678",
        "+254712345678",
        "254712345678",
        "0112345678",
        "254112345678",
        "\u202a+254712345678\u202c",  # copied from the phone's contacts
        "(+254)712345678",
    ],
)
def test_one_line_invoice_phone_forms(phone: str) -> None:
    command = parse(f"invoice {phone} 1500 Logo design")
    assert isinstance(command, OneLineInvoice)
    digits = phone.strip("\u202a\u202c").replace("(+254)", "254")
    assert command.phone == ("2541" if digits[-9] == "1" else "2547") + digits[-8:]
    assert command.amount_cents == 150_000
    assert command.description == "Logo design"


@pytest.mark.parametrize(
    "amount",
    ["1500", "1,500", "KES 1500", "Ksh1,500", "kes 1,500", "1500 KES", "1,500 /=", "1500KES"],
)
def test_one_line_amount_forms(amount: str) -> None:
    command = parse(f"INVOICE   0712345678   {amount}   Logo   design")
    assert command == OneLineInvoice(150_000, "Logo design", phone="254712345678")


def test_saved_name_is_every_word_before_the_amount() -> None:
    assert parse("invoice Mama Mboga 500 Sukuma wiki") == OneLineInvoice(
        50_000, "Sukuma wiki", saved_name="Mama Mboga"
    )


def test_a_name_followed_by_several_numbers_gives_a_reading_for_each() -> None:
    """`Mama 2 1500 Rice`: "Mama" for KSh 2, or "Mama 2" for KSh 1,500; the service keeps the
    reading whose name is saved."""
    assert parse("invoice Mama 2 1500 Rice") == SavedNameInvoice(
        (
            NameReading("Mama", invoice=OneLineInvoice(200, "1500 Rice", saved_name="Mama")),
            NameReading("Mama 2", invoice=OneLineInvoice(150_000, "Rice", saved_name="Mama 2")),
        )
    )


def test_a_reading_that_does_not_parse_carries_what_is_wrong() -> None:
    command = parse("invoice Mama Mboga 12 000 Sukuma wiki")
    assert isinstance(command, SavedNameInvoice)
    first, second = command.readings
    assert first.name == "Mama Mboga" and first.invoice is None
    assert "KSh 12 or KSh 12,000?" in (first.error or "")
    assert second.name == "Mama Mboga 12" and "at least KSh 1" in (second.error or "")


def test_readings_stop_after_a_few_numbers() -> None:
    command = parse("invoice Jane 1 2 3 4 5 6 7 8 9 bags")
    assert isinstance(command, SavedNameInvoice)
    assert [r.name for r in command.readings] == ["Jane", "Jane 1", "Jane 1 2", "Jane 1 2 3"]
    assert len(command.readings) == MAX_NAME_READINGS


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("invoice 123456 1000 Services", "phone"),
        ("invoice 254712345678 0 Services", "at least KSh 1"),
        ("invoice 254712345678 1000", "Add what the invoice is for"),
        ("invoice 254712345678 1000 ab", "too short"),
        ("invoice 254712345678 1000 " + "x" * 121, "too long"),
        ("invoice 254712345678 1000.50 Cake", "whole shillings"),
        ("invoice 254712345678 150001 Car", "150,000"),
        ("invoice 254712345678 Cake", "amount"),
        ("invoice Jane", "phone"),
        ("status 12", "invoice number"),
        ("vat maybe", "vat on"),
        ("name", "business name"),
        # What others read is shown as typed: no reordering, no invisible padding.
        ("invoice 254712345678 1500 Logo \u202e0051 SEK\u202c design", "text-direction"),
        ("invoice 254712345678 1500 Logo \u2066design", "text-direction"),
        ("invoice 254712345678 1500 ab\u200b\u200b", "too short"),
        ("invoice 254712345678 1500 Cake \x1b[31m", "control characters"),
        ("name Biz \u202eEVIL", "text-direction"),
        ("name \u200b\u200bB", "business name"),
    ],
)
def test_errors_say_what_to_type(text: str, fragment: str) -> None:
    with pytest.raises(CommandError) as error:
        parse(text)
    assert fragment.lower() in error.value.message.lower()


@pytest.mark.parametrize(
    "text",
    [
        "invoice 0712345678 1 500 Logo design",
        "invoice 0712345678 KES 2 500 Cake",
        "invoice 0712345678 Ksh2 500 Cake",
        "invoice 0712345678 Sh1 500 Logo design",
        "invoice 0712345678 Ksh.1 500 Logo design",
        "invoice 0712345678 1 500/= Logo design",
        "invoice 0712345678 1 500.00 Logo design",
        "invoice 0712345678 1, 500 Logo design",
    ],
)
def test_thousands_split_by_a_space_are_asked_about_not_read_as_a_small_amount(text: str) -> None:
    """A one-line invoice goes out at once: KSh 1 for "500 Logo design" would reach the
    customer. The merchant is asked which amount they meant."""
    with pytest.raises(CommandError) as error:
        parse(text)
    assert "without spaces" in error.value.message
    assert re.search(r"KSh \d+ or KSh \d+,\d{3}\?", error.value.message)


@pytest.mark.parametrize(
    ("text", "amount_cents", "description"),
    [
        ("invoice 0712345678 1500 500 bricks", 150_000, "500 bricks"),
        ("invoice 0712345678 1 5000 litres", 100, "5000 litres"),
        ("invoice 0712345678 1 50 bags", 100, "50 bags"),
        ("invoice 0712345678 150 Chairs x100", 15_000, "Chairs x100"),
        # 500,100 is past the largest M-PESA payment: no question to ask.
        ("invoice 0712345678 500 100 chairs", 50_000, "100 chairs"),
    ],
)
def test_a_description_that_starts_with_a_number_is_kept_when_nothing_is_split(
    text: str, amount_cents: int, description: str
) -> None:
    assert parse(text) == OneLineInvoice(amount_cents, description, phone="254712345678")


def test_description_of_exactly_the_limits_is_accepted() -> None:
    assert isinstance(parse("invoice 0712345678 10 abc"), OneLineInvoice)
    assert isinstance(parse("invoice 0712345678 10 " + "y" * 120), OneLineInvoice)


@pytest.mark.parametrize("button_id", ["flow:edit:abc:²", "flow:edit:abc:x", "flow:edit"])
def test_a_flow_button_that_is_not_ours_is_no_button(button_id: str) -> None:
    assert guided.parse_button(button_id) is None


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("Unpaid.", Unpaid()),
        ("unpaid?", Unpaid()),
        ("?", Help()),
        ("Help!", Help()),
        ("invoice!", StartGuided()),
        ("Invoice.", StartGuided()),
        ("invoice: 0712345678 500 Milk", OneLineInvoice(50_000, "Milk", phone="254712345678")),
        ("status: INV7K3QX9A", InvoiceAction("status", "INV7K3QX9A")),
        ("status #INV7K3QX9A", InvoiceAction("status", "INV7K3QX9A")),
        ("vat off.", SetVat(enabled=False)),
        ("VAT On!", SetVat(enabled=True)),
    ],
)
def test_punctuation_typed_with_a_command_word_is_still_the_command(
    text: str, command: object
) -> None:
    assert parse(text) == command


@pytest.mark.parametrize("after", [":", ",", ";", "."])
def test_punctuation_typed_after_the_phone_number_is_left_out(after: str) -> None:
    command = parse(f"invoice 0712345678{after} 1000 Flour")
    assert command == OneLineInvoice(100_000, "Flour", phone="254712345678")


@pytest.mark.parametrize(
    ("text", "fixed"),
    [
        ("invoice 0722 000 004 Ksh1,500 Branding", "invoice 0722000004 Ksh1,500 Branding"),
        ("invoice 0722 000004 1500 Branding", "invoice 0722000004 1500 Branding"),
        ("invoice +254 722 000 005 1500 Branding", "invoice +254722000005 1500 Branding"),
        ("invoice 07 22 00 00 04 1500 Branding", "invoice 0722000004 1500 Branding"),
    ],
)
def test_a_phone_number_typed_with_spaces_is_asked_for_without_them(text: str, fixed: str) -> None:
    """Not "Is that KSh 000 or KSh 000,004?" nor "too short": the number is there, spaced."""
    with pytest.raises(CommandError) as error:
        parse(text)
    assert error.value.message == f"Type the phone number without spaces, like: {fixed}"


@pytest.mark.parametrize("amount", ["15OO", "1500bob", "1e3", "½", "١٥٠٠"])
def test_a_mistyped_amount_after_the_phone_is_called_so(amount: str) -> None:
    with pytest.raises(CommandError) as error:
        parse(f"invoice 0722000020 {amount} Test item")
    assert error.value.message.startswith("That doesn't look like an amount.")


@pytest.mark.parametrize(
    "text",
    [
        "invoice to 0766000006 1500 Logo",
        "invoice Logo design 0766000006 1500",
        "invoice Mama Mboga 0766 000 006 1500 sukuma",
    ],
)
def test_a_phone_number_after_other_words_is_asked_for_first(text: str) -> None:
    """Not "at most KSh 150,000" (the phone read as the amount), nor a wrong suggestion."""
    with pytest.raises(CommandError) as error:
        parse(text)
    assert error.value.message == (
        "Put the customer's phone number right after invoice, then the amount and what it is "
        "for, like: invoice 0766000006 1500 Logo design"
    )


def test_no_amount_after_the_phone_asks_for_one_there() -> None:
    with pytest.raises(CommandError) as error:
        parse("invoice 0722000020 Test item 1500")
    assert error.value.message.startswith("Put the amount after the phone number")


@pytest.mark.parametrize("verb", ["status", "remind", "Status."])
def test_an_invoice_command_without_its_number_says_what_to_add(verb: str) -> None:
    """Not the whole help: the merchant knew the command, only the number is missing."""
    with pytest.raises(CommandError) as error:
        parse(verb)
    word = verb.lower().strip(".")
    assert error.value.message == (
        f"Type {word} followed by the invoice number, like: {word} INV7K3QX9A"
    )


def test_cancel_with_no_draft_and_no_number_says_both() -> None:
    """Typed as a draft expires, it reads after the expiry notice."""
    with pytest.raises(CommandError) as error:
        parse("cancel")
    assert error.value.message == (
        "There is no draft invoice to cancel. To cancel an invoice, type cancel followed by "
        "its number, like: cancel INV7K3QX9A"
    )
