"""No input makes a parser raise anything but its own validation error.

Each property feeds arbitrary and near-valid input to one parser and checks two things: the only
exception is the parser's documented refusal, and what it returns has the promised shape.
"""

from __future__ import annotations

import re
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fuzz.strategies import examples, json_values, stk_callback, texts, wa_envelope
from invoiceiq.conversations.commands import (
    DESCRIPTION_MAX,
    DESCRIPTION_MIN,
    MAX_NAME_READINGS,
    CommandError,
    Help,
    InvoiceAction,
    OneLineInvoice,
    SavedNameInvoice,
    SetName,
    SetVat,
    StartGuided,
    Unknown,
    Unpaid,
    parse_command,
)
from invoiceiq.kit.money import AmountError, looks_like_amount, parse_amount, split_amount
from invoiceiq.kit.phone import PhoneError, mask_msisdn, mask_phones_in_text, normalize_msisdn
from invoiceiq.mpesa.schemas import CallbackError, parse_callback
from invoiceiq.whatsapp import adapter
from invoiceiq.whatsapp.schemas import envelope_from_document, inbound_events

MAX_AMOUNT = 150_000
MSISDN = re.compile(r"254[17][0-9]{8}")
FUZZ = settings(
    max_examples=examples(300),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# What merchants type: a verb (or not), then phones, amounts, names and junk, in any order.
_words = st.sampled_from(
    [
        "invoice",
        "INVOICE",
        "status",
        "cancel",
        "remind",
        "unpaid",
        "name",
        "vat",
        "on",
        "off",
        "help",
        "menu",
        "?",
        "Jane",
        "KES",
        "ksh",
        "Sh.",
        "Logo",
        "design",
        "INV7K3QX9A",
    ]
)
_amounts = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**25).map(str),
    st.from_regex(r"[-−]?(kes|ksh)?\.? ?[0-9.,]{1,14}(/=|/-)?", fullmatch=True),
)
_phones = st.one_of(
    st.from_regex(r"(\+?254|0)[17][0-9 \-]{6,12}", fullmatch=True),
    st.from_regex(r"\+?[0-9()\-.]{1,70}", fullmatch=True),
)
command_lines = st.one_of(
    texts,
    st.lists(st.one_of(_words, _amounts, _phones, texts), min_size=1, max_size=8).map(" ".join),
)
amount_texts = st.one_of(texts, _amounts, st.lists(_amounts, max_size=3).map(" ".join))
phone_texts = st.one_of(
    texts, _phones, st.integers(min_value=4000, max_value=4400).map("7".__mul__)
)

COMMANDS = (
    Help,
    StartGuided,
    OneLineInvoice,
    SavedNameInvoice,
    InvoiceAction,
    Unpaid,
    SetName,
    SetVat,
    Unknown,
)


@FUZZ
@given(line=command_lines)
@example(line="invoice 0712345678 " + "9" * 5000 + " Logo design")
@example(line="invoice Jane \x00 1500 \ud800\ud800\ud800")
@example(line="status INV" + "٣" * 7)
def test_the_command_parser_refuses_only_with_command_error(line: str) -> None:
    try:
        command = parse_command(line, max_amount=MAX_AMOUNT)
    except CommandError as error:
        assert error.message
        return
    assert isinstance(command, COMMANDS)
    if isinstance(command, OneLineInvoice):
        _check_invoice(command)
    if isinstance(command, SavedNameInvoice):
        assert 1 < len(command.readings) <= MAX_NAME_READINGS
        for reading in command.readings:
            assert (reading.invoice is None) != (reading.error is None)
            assert reading.error is None or reading.error
            if reading.invoice is not None:
                _check_invoice(reading.invoice)
                assert reading.invoice.saved_name == reading.name


def _check_invoice(command: OneLineInvoice) -> None:
    assert 100 <= command.amount_cents <= MAX_AMOUNT * 100
    assert command.amount_cents % 100 == 0
    assert DESCRIPTION_MIN <= len(command.description) <= DESCRIPTION_MAX
    assert (command.phone is None) != (command.saved_name is None)
    assert command.phone is None or MSISDN.fullmatch(command.phone)


@FUZZ
@given(text=amount_texts)
@example(text="9" * 5000)
@example(text="١٥٠٠")
def test_the_amount_parser_refuses_only_with_amount_error(text: str) -> None:
    looks_like_amount(text)
    span = split_amount(text.split())
    if span is not None:
        assert 0 <= span[0] < span[1] <= len(text.split())
    try:
        cents = parse_amount(text, max_amount=MAX_AMOUNT)
    except AmountError as error:
        assert error.message and error.reason
        return
    assert 100 <= cents <= MAX_AMOUNT * 100 and cents % 100 == 0


@FUZZ
@given(text=phone_texts)
@example(text="7" * 5000)
@example(text="+254 ٧١٢ ٣٤٥ ٦٧٨")
def test_the_phone_parser_refuses_only_with_phone_error(text: str) -> None:
    assert len(mask_msisdn(text)) == len(text)
    mask_phones_in_text(text)
    try:
        msisdn = normalize_msisdn(text)
    except PhoneError as error:
        assert error.message and error.reason
        return
    assert MSISDN.fullmatch(msisdn)


def _events(document: Any) -> None:
    envelope = envelope_from_document(document)
    if envelope is None:
        return
    messages, statuses = inbound_events(envelope)
    for message in messages:
        incoming = adapter.to_incoming(message)
        if incoming is not None:
            assert adapter.incoming_from_json(adapter.incoming_to_json(incoming)) == incoming
    for update in statuses:
        adapter.status_to_json(update)


@FUZZ
@given(document=json_values)
def test_the_webhook_parser_refuses_any_json_only_with_validation_error(document: Any) -> None:
    _events(document)


@settings(FUZZ, max_examples=examples(100))  # big documents: slow to generate
@given(document=wa_envelope)
def test_the_webhook_parser_survives_near_valid_envelopes(document: Any) -> None:
    _events(document)


def _callback(document: Any) -> None:
    try:
        callback = parse_callback(document)
    except CallbackError as error:
        assert str(error)
        return
    assert callback.checkout_request_id
    assert callback.merchant_request_id is None or callback.merchant_request_id.strip()
    assert callback.succeeded == (callback.result_code == "0")
    assert callback.amount is None or callback.amount >= 0


@FUZZ
@given(document=json_values)
def test_the_callback_parser_refuses_any_json_only_with_callback_error(document: Any) -> None:
    _callback(document)


@FUZZ
@given(document=stk_callback)
def test_the_callback_parser_survives_near_valid_callbacks(document: Any) -> None:
    _callback(document)
