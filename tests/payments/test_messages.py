"""Receipts and failure notices: Nairobi time, the templates used outside the 24-hour window."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from invoiceiq.db.models import Invoice
from invoiceiq.payments import messages
from invoiceiq.whatsapp.templates import load_templates

PAID_AT = datetime(2026, 11, 26, 21, 5, tzinfo=UTC)  # 00:05 the next day in Nairobi
STAMP = "27 Nov 2026, 00:05 (Nairobi)"
LINK = "https://pay.example.com/i/token"


def an_invoice() -> Invoice:
    return Invoice(
        number="INV7K3QX9A",
        public_token="token",
        customer_phone="254712345678",
        customer_name="Jane",
        amount_cents=150_000,
    )


@pytest.mark.parametrize("receipt", ["UAB12CD34E", None])
def test_receipts_carry_everything_in_both_forms(receipt: str | None) -> None:
    templates = load_templates()
    invoice = an_invoice()
    reference = receipt or "confirmed by M-PESA"
    customer = messages.receipt_for_customer(
        invoice, business_name="Wanjiku Designs", receipt=receipt, paid_at=PAID_AT, link=LINK
    )
    merchant = messages.receipt_for_merchant(
        invoice, payer=invoice.customer_phone, receipt=receipt, paid_at=PAID_AT, link=LINK
    )

    for outbound, extra in ((customer, "Wanjiku Designs"), (merchant, "2547•••••678")):
        assert outbound.template is not None
        rendered = templates[outbound.template.name].render(outbound.template.params)
        for form in (outbound.text, rendered):
            for part in (reference, "KSh 1,500", invoice.number, STAMP, LINK, extra):
                assert part in form, (part, form)
            assert "254712345678" not in form


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("1032", "you cancelled"),
        ("1037", "did not answer"),
        ("1", "balance is not enough"),
        ("2001", "PIN was wrong"),
        ("17", "within 2 minutes"),
        ("busy", "finish or cancel it"),
        ("SFC_IC0003", "M-PESA could not complete the payment"),
        (None, "M-PESA could not complete the payment"),
    ],
)
def test_failures_are_told_in_plain_words(code: str | None, words: str) -> None:
    notice = messages.failure_for_customer(an_invoice(), business_name="W", code=code)

    assert words in notice.text and "still open" in notice.text
    assert notice.template is not None
    rendered = load_templates()["payment_failed"].render(notice.template.params)
    assert words in rendered


def test_an_unconfirmed_payment_asks_not_to_pay_twice_in_both_forms() -> None:
    notice = messages.unconfirmed_for_customer(an_invoice(), business_name="Wanjiku Designs")

    assert notice.template is not None and notice.template.button_payloads == ("pay:INV7K3QX9A",)
    rendered = load_templates()["payment_unconfirmed"].render(notice.template.params)
    for form in (notice.text, rendered):
        for part in ("could not confirm", "confirmation SMS", "do not pay again", "INV7K3QX9A"):
            assert part in form, (part, form)
        assert "KSh 1,500" in form and "did not go through" not in form


def test_a_review_alert_promises_nothing_it_cannot_know() -> None:
    """Flagged payments include ones where no money may have moved at all (a push never heard
    of), and a reply to the alert reaches the command parser, not a person."""
    notice = messages.review_for_merchant(
        an_invoice(), amount_cents=150_000, reason=messages.OUTCOME_UNKNOWN_REASON
    )
    assert notice.template is not None
    rendered = load_templates()["merchant_payment_review"].render(notice.template.params)
    for form in (notice.text, rendered):
        assert "M-PESA statement" in form and "INV7K3QX9A" in form
        assert "recorded" not in form and "Reply" not in form


@pytest.mark.parametrize(
    "reason",
    [
        messages.OUTCOME_UNKNOWN_REASON,
        messages.CLAIM_DENIED_REASON,
        messages.CHECKOUT_ID_DIFFERS_REASON,
    ],
)
def test_a_review_alert_says_why_in_the_merchants_words(reason: str) -> None:
    """The review reason is the operator's note; the merchant hears no push, callback, query
    or CheckoutRequestID, and is not asked to check a statement our team checks."""
    notice = messages.review_for_merchant(an_invoice(), amount_cents=150_000, reason=reason)
    assert notice.template is not None
    rendered = load_templates()["merchant_payment_review"].render(notice.template.params)
    for form in (notice.text, rendered):
        words = form.lower()
        assert not {"push", "callback", "query", "checkoutrequestid"} & set(
            re.findall(r"[a-z]+", words)
        )
        assert words.count("statement") == 1


def test_a_failure_from_another_number_is_not_blamed_on_the_customer() -> None:
    notice = messages.failure_for_merchant(an_invoice(), code="1032", other_payer=True)
    assert notice.text == (
        "A payment attempt for invoice INV7K3QX9A (KSh 1,500) from another number, on the "
        "invoice page, did not go through: the payer cancelled the M-PESA prompt. The invoice "
        "is still open; the customer can try again."
    )
    own = messages.failure_for_merchant(an_invoice(), code="1032")
    assert "the customer cancelled the M-PESA prompt" in own.text
