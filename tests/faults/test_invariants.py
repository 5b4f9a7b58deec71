"""The fault-run checker's classification of money taken by a push nobody heard back from."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from faults.invariants import Evidence, Report, _check_attempts, _check_pushes
from invoiceiq.db.models import Invoice, Payment
from invoiceiq.invoices.states import InvoiceStatus
from invoiceiq.payments.messages import OUTCOME_UNKNOWN_REASON
from invoiceiq.payments.states import PaymentStatus

NUMBER = "INVBLIND01"
CUSTOMER = "254711000001"


def prompt(checkout_request_id: str) -> dict[str, str]:
    return {
        "account_reference": NUMBER,
        "checkout_request_id": checkout_request_id,
        "result_code": "0",
        "state": "answered",
        "at": "2026-01-05T10:00:00+00:00",
    }


@pytest.mark.parametrize("flagged", [True, False])
def test_money_taken_by_a_blind_push_is_reported_as_flagged_only_when_it_was(
    flagged: bool,
) -> None:
    invoice = Invoice(
        id=uuid.uuid4(), number=NUMBER, customer_phone=CUSTOMER, status=InvoiceStatus.PAID
    )
    # The first prompt was paid but the app never heard of it; the customer paid again.
    blind = Payment(
        id=uuid.uuid4(),
        invoice_id=invoice.id,
        status=PaymentStatus.FAILED,
        result_code="no_response",
        push_sent_at=datetime.now(UTC),
        needs_review=flagged,
        review_reason=OUTCOME_UNKNOWN_REASON if flagged else None,
    )
    again = Payment(
        id=uuid.uuid4(),
        invoice_id=invoice.id,
        status=PaymentStatus.SUCCESS,
        checkout_request_id="ws_CO_2",
        push_sent_at=datetime.now(UTC),
        needs_review=False,
    )
    evidence = Evidence(
        flows=[],
        invoices=[invoice],
        payments=[blind, again],
        logs=[],
        outbox=[],
        prompts=[prompt("ws_CO_1"), prompt("ws_CO_2")],
        inboxes={},
    )
    report = Report()

    _check_attempts(evidence, {CUSTOMER: invoice}, report)
    _check_pushes(evidence, {CUSTOMER: invoice}, report)

    text = "\n".join(report.lines)
    assert report.violations == [] and report.suspects == [NUMBER]
    assert ("FLAGGED FOR REVIEW: 1 prompt(s)" in text) is flagged
    assert ("MONEY AT RISK: 1 prompt(s)" in text) is not flagged
    assert ("flagged for review, push outcome unknown: 1 attempt(s)" in text) is flagged


def test_any_other_review_flag_is_still_a_violation() -> None:
    invoice = Invoice(
        id=uuid.uuid4(), number=NUMBER, customer_phone=CUSTOMER, status=InvoiceStatus.PAID
    )
    odd = Payment(
        id=uuid.uuid4(),
        invoice_id=invoice.id,
        status=PaymentStatus.SUCCESS,
        checkout_request_id="ws_CO_1",
        needs_review=True,
        review_reason=f"{OUTCOME_UNKNOWN_REASON}; the invoice was already paid when this came in",
    )
    evidence = Evidence([], [invoice], [odd], [], [], [prompt("ws_CO_1")], {})
    report = Report()

    _check_attempts(evidence, {CUSTOMER: invoice}, report)

    assert [v for v in report.violations if "flagged for review" in v]
