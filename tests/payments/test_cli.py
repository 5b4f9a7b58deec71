"""`invoiceiq payments query|review|resolve`, run in-process against the test database.

`query` talks to Daraja, so those tests run the whole app (its simulator answers) and call the
command from a thread: the command runs its own event loop, as it does from a shell.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from invoiceiq.cli import app as cli_app
from invoiceiq.db.engine import SessionFactory
from invoiceiq.db.models import Invoice, MessageLog, Payment
from invoiceiq.db.uow import unit_of_work
from invoiceiq.inbox.models import InboxEvent
from invoiceiq.invoices.states import InvoiceStatus
from invoiceiq.kit.clock import utcnow
from invoiceiq.main import create_app
from invoiceiq.payments.cli import render_unreadable
from invoiceiq.payments.states import PaymentStatus
from payments.flows import (
    CUSTOMER,
    FAILED,
    RECEIPT,
    answer,
    callback_body,
    configure,
    drained,
    fake_prompt,
    named_merchant,
    send_invoice,
    tap,
    the_invoice,
    wait_prompt,
    wait_rows,
    with_text,
)
from support import factories
from support.app_server import rows, running_app
from support.cli import Invoke, with_sessions
from support.db import make_settings

MASKED = "2547•••••678"


def seed(database_url: str, **rows_wanted: dict[str, Any]) -> dict[str, uuid.UUID]:
    """Payments by name, each on an invoice of its own unless `invoice=None` is given."""

    async def work(sessions: SessionFactory) -> dict[str, uuid.UUID]:
        ids: dict[str, uuid.UUID] = {}
        async with unit_of_work(sessions) as session:
            owner = await factories.merchant(session)
            for name, values in rows_wanted.items():
                values = dict(values)
                if "invoice" in values and values["invoice"] is None:
                    row = Payment(
                        invoice_id=None,
                        phone=values.pop("phone", CUSTOMER),
                        amount_cents=values.pop("amount_cents", 150_000),
                        **{k: v for k, v in values.items() if k != "invoice"},
                    )
                    session.add(row)
                    await session.flush()
                else:
                    invoice = await factories.invoice(session, merchant=owner)
                    row = await factories.payment(session, invoice=invoice, **values)
                ids[name] = row.id
        return ids

    return with_sessions(database_url, work)


def test_review_lists_flagged_payments_with_masked_numbers(cli: Invoke, database_url: str) -> None:
    assert cli("payments", "review").output.strip() == "no payments need review"
    ids = seed(
        database_url,
        flagged={
            "status": PaymentStatus.SUCCESS,
            "needs_review": True,
            "review_reason": "the invoice was already paid when this payment came in",
            "receipt_number": "UAB12CD34E",
            "checkout_request_id": "ws_CO_26112026162201123712345678",
        },
        unmatched={
            "invoice": None,
            "status": PaymentStatus.FAILED,
            "needs_review": True,
            "review_reason": "a success callback that matches no payment attempt",
        },
        fine={"status": PaymentStatus.SUCCESS},
        resolved={
            "needs_review": True,
            "review_reason": "old news",
            "reviewed_at": utcnow() - timedelta(days=1),
            "review_note": "refunded by the merchant",
        },
    )

    listed = cli("payments", "review")
    everything = cli("payments", "review", "--all")

    assert listed.exit_code == 0
    out = listed.output
    assert str(ids["flagged"]) in out and str(ids["unmatched"]) in out
    assert str(ids["fine"]) not in out and str(ids["resolved"]) not in out
    assert "already paid" in out and "matches no payment attempt" in out
    assert "UAB12CD34E" in out and "invoice (none)" in out and "KSh 1,500" in out
    assert MASKED in out and CUSTOMER not in out and "712345678" not in out
    assert "ws_CO_" in out
    assert str(ids["resolved"]) in everything.output
    assert "refunded by the merchant" in everything.output


def test_resolve_closes_a_review_with_a_note(cli: Invoke, database_url: str) -> None:
    ids = seed(
        database_url,
        flagged={"needs_review": True, "review_reason": "amount differs"},
        fine={"status": PaymentStatus.SUCCESS},
    )
    flagged = str(ids["flagged"])

    not_an_id = cli("payments", "resolve", "nope", "--note", "x")
    no_note = cli("payments", "resolve", flagged, "--note", "   ")
    unknown = cli("payments", "resolve", str(uuid.uuid4()), "--note", "x")
    not_flagged = cli("payments", "resolve", str(ids["fine"]), "--note", "x")
    done = cli("payments", "resolve", flagged, "--note", "Refunded KES 1 on 26 Nov")
    again = cli("payments", "resolve", flagged, "--note", "twice")

    assert (not_an_id.exit_code, no_note.exit_code) == (2, 2)
    assert "not a payment id" in not_an_id.output and "--note" in no_note.output
    assert unknown.exit_code == 1 and "No payment" in unknown.output
    assert not_flagged.exit_code == 1 and "not flagged" in not_flagged.output
    assert done.exit_code == 0 and f"resolved payment {flagged}" in done.output
    assert again.exit_code == 1 and "resolved already" in again.output
    [payment] = asyncio.run(rows(database_url, Payment, Payment.id == ids["flagged"]))
    assert payment.review_note == "Refunded KES 1 on 26 Nov" and payment.reviewed_at
    assert payment.needs_review  # the flag and its reason stay, for the record
    assert cli("payments", "review").output.strip() == "no payments need review"


UNKNOWN_OUTCOME = {
    "status": PaymentStatus.FAILED,
    "result_code": "no_response",
    "needs_review": True,
    "review_reason": "push outcome unknown: M-PESA sent no answer and no callback",
}


def seed_cases(database_url: str, **cases: dict[str, Any]) -> dict[str, uuid.UUID]:
    """A payment per case, on an invoice of its own: `invoice` holds the invoice's values
    (None: no invoice), `open_too` adds an open attempt on the same invoice."""

    async def work(sessions: SessionFactory) -> dict[str, uuid.UUID]:
        ids: dict[str, uuid.UUID] = {}
        async with unit_of_work(sessions) as session:
            owner = await factories.merchant(session, business_name="Mama Mboga")
            for name, values in cases.items():
                values = {**UNKNOWN_OUTCOME, **values}
                invoice_values = values.pop("invoice", {})
                open_too = values.pop("open_too", False)
                if invoice_values is None:
                    row = Payment(invoice_id=None, phone=CUSTOMER, amount_cents=150_000, **values)
                    session.add(row)
                    await session.flush()
                else:
                    invoice = await factories.invoice(session, merchant=owner, **invoice_values)
                    row = await factories.payment(session, invoice=invoice, **values)
                    if open_too:
                        await factories.payment(session, invoice=invoice)
                ids[name] = row.id
        return ids

    return with_sessions(database_url, work)


def payment_and_invoice(database_url: str, payment_id: uuid.UUID) -> tuple[Payment, Any]:
    [payment] = asyncio.run(rows(database_url, Payment, Payment.id == payment_id))
    [invoice] = asyncio.run(rows(database_url, Invoice, Invoice.id == payment.invoice_id))
    return payment, invoice


def test_resolve_paid_marks_the_payment_and_its_invoice_paid_and_sends_receipts(
    cli: Invoke, database_url: str
) -> None:
    ids = seed_cases(database_url, found={})
    found = str(ids["found"])

    done = cli(
        "payments", "resolve", found, "--paid", "--receipt", " ukm7wypx9w ", "--note", "on stmt"
    )
    again = cli("payments", "resolve", found, "--paid", "--note", "twice")

    assert done.exit_code == 0, done.output
    assert "marked paid" in done.output and "PAID" in done.output
    payment, invoice = payment_and_invoice(database_url, ids["found"])
    assert payment.status is PaymentStatus.SUCCESS and payment.confirmed_by == "operator"
    assert payment.receipt_number == "UKM7WYPX9W"
    assert payment.reviewed_at is not None and payment.review_note == "on stmt"
    assert invoice.status is InvoiceStatus.PAID and invoice.paid_at is not None
    logs = asyncio.run(rows(database_url, MessageLog, MessageLog.invoice_id == invoice.id))
    sent = sorted((log.kind, log.phone == CUSTOMER) for log in logs)
    assert sent == [("payment_received", False), ("receipt", True)]
    assert all("UKM7WYPX9W" in (log.request or {}).get("text", "") for log in logs)
    assert again.exit_code == 1 and "SUCCESS already" in again.output
    assert cli("payments", "review").output.strip() == "no payments need review"


def test_resolve_paid_without_a_receipt_number_says_confirmed(
    cli: Invoke, database_url: str
) -> None:
    ids = seed_cases(database_url, found={})

    done = cli("payments", "resolve", str(ids["found"]), "--paid", "--note", "on statement")

    assert done.exit_code == 0, done.output
    payment, invoice = payment_and_invoice(database_url, ids["found"])
    assert payment.status is PaymentStatus.SUCCESS and payment.receipt_number is None
    assert invoice.status is InvoiceStatus.PAID


def test_resolve_paid_takes_the_receipt_its_unconfirmed_claim_carried(
    cli: Invoke, database_url: str
) -> None:
    prompt = fake_prompt(amount=1500)
    ids = seed_cases(
        database_url,
        claimed={
            "checkout_request_id": prompt["checkout_request_id"],
            "callback_body": callback_body(prompt, receipt="UCLAIMED12"),
            "review_reason": "M-PESA never confirmed the reported payment",
        },
    )

    done = cli("payments", "resolve", str(ids["claimed"]), "--paid", "--note", "on statement")

    assert done.exit_code == 0, done.output
    payment, _ = payment_and_invoice(database_url, ids["claimed"])
    assert payment.status is PaymentStatus.SUCCESS and payment.receipt_number == "UCLAIMED12"


def test_resolve_paid_records_an_attempt_given_up_though_never_flagged(
    cli: Invoke, database_url: str
) -> None:
    """Given up with no word from M-PESA (queried, never answered): not flagged, since its push
    was known; its money may still turn up on the statement."""
    ids = seed_cases(database_url, given_up={"needs_review": False, "review_reason": None})

    done = cli("payments", "resolve", str(ids["given_up"]), "--paid", "--note", "on statement")

    assert done.exit_code == 0, done.output
    payment, invoice = payment_and_invoice(database_url, ids["given_up"])
    assert payment.status is PaymentStatus.SUCCESS and invoice.status is InvoiceStatus.PAID
    assert payment.needs_review and payment.reviewed_at is not None  # the record of who did it
    assert payment.review_reason == "marked paid by hand from the M-PESA statement"
    listed = cli("payments", "review", "--all").output
    assert str(ids["given_up"]) in listed and "on statement" in listed


def test_resolve_paid_refuses_what_would_charge_or_tell_anyone_twice(
    cli: Invoke, database_url: str
) -> None:
    ids = seed_cases(
        database_url,
        paid_invoice={"invoice": {"status": InvoiceStatus.PAID}},
        cancelled={"invoice": {"status": InvoiceStatus.CANCELLED}},
        confirmed={"status": PaymentStatus.SUCCESS},
        still_open={"status": PaymentStatus.INITIATED},
        no_invoice={"invoice": None},
        retried={"open_too": True},
        failed_for_sure={"needs_review": False, "result_code": "1032"},
        other_amount={"review_reason": "M-PESA reported KES 1,000, the attempt was for KES 1,500"},
        used={"receipt_number": "UKM7WYPX9W", "status": PaymentStatus.SUCCESS},
        other={},
    )

    def refusal(name: str, *extra: str) -> str:
        result = cli("payments", "resolve", str(ids[name]), "--paid", "--note", "x", *extra)
        assert result.exit_code == 1, (name, result.output)
        return result.output

    assert "paid already" in refusal("paid_invoice")
    assert "cancelled already" in refusal("cancelled")
    assert "SUCCESS already" in refusal("confirmed")
    assert "still open" in refusal("still_open")
    assert "matches no invoice" in refusal("no_invoice")
    assert "attempt open" in refusal("retried")
    assert "M-PESA's word (1032)" in refusal("failed_for_sure")
    assert "another amount" in refusal("other_amount")
    assert "belongs to another payment" in refusal("other", "--receipt", "UKM7WYPX9W")
    # Nothing was written: every flagged payment is still on the list, as it was.
    for name in ("paid_invoice", "cancelled", "still_open", "retried", "other", "other_amount"):
        payment, invoice = payment_and_invoice(database_url, ids[name])
        assert payment.reviewed_at is None and payment.confirmed_by is None, name
        assert invoice.paid_at is None, name
    assert not asyncio.run(rows(database_url, MessageLog))


def test_resolve_refuses_a_receipt_it_cannot_use(cli: Invoke, database_url: str) -> None:
    ids = seed_cases(database_url, found={})
    found = str(ids["found"])

    without_paid = cli("payments", "resolve", found, "--receipt", "UKM7WYPX9W", "--note", "x")
    malformed = cli("payments", "resolve", found, "--paid", "--receipt", "UKM7-WY", "--note", "x")

    assert without_paid.exit_code == 2 and "--receipt goes with --paid" in without_paid.output
    assert malformed.exit_code == 2 and "not an M-PESA receipt number" in malformed.output
    payment, _ = payment_and_invoice(database_url, ids["found"])
    assert payment.status is PaymentStatus.FAILED and payment.reviewed_at is None


def test_query_explains_what_it_cannot_ask(cli: Invoke, database_url: str) -> None:
    async def work(sessions: SessionFactory) -> tuple[str, str]:
        async with unit_of_work(sessions) as session:
            lost = await factories.invoice(session, number="INV00BST10")
            await factories.payment(session, invoice=lost, push_sent_at=utcnow())
            paid = await factories.invoice(session, status=InvoiceStatus.PAID)
            await factories.payment(session, invoice=paid, status=PaymentStatus.SUCCESS)
            return lost.number, paid.number

    _, paid = with_sessions(database_url, work)

    unknown = cli("payments", "query", "INV0000000")
    blank = cli("payments", "query", "  ")
    # Lower case, and an O typed for a 0 (no number has an O), find it too.
    no_id = cli("payments", "query", "invoobst1o")
    settled = cli("payments", "query", paid)

    assert unknown.exit_code == 1 and "No invoice INV0000000" in unknown.output
    assert blank.exit_code == 1 and "Type the invoice number, like INV7K3QX9A." in blank.output
    assert no_id.exit_code == 1 and "no CheckoutRequestID" in no_id.output
    assert settled.exit_code == 1 and "no open payment attempt" in settled.output
    assert "SUCCESS" in settled.output


async def pushed(database_url: str, *, count: int) -> None:
    """Until the app has stored the CheckoutRequestID of `count` pushes (the prompt shows on
    the phone a moment before)."""
    await wait_rows(
        database_url,
        Payment,
        lambda ps: len(ps) == count and all(p.checkout_request_id for p in ps),
    )


async def test_query_applies_m_pesas_answer(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    async def query(number: str) -> Result:
        return await asyncio.to_thread(
            runner.invoke, cli_app, ["payments", "query", number], catch_exceptions=False
        )

    async with running_app(database_url) as app:
        monkeypatch.setenv("DATABASE_URL", database_url)
        monkeypatch.setenv("BASE_URL", app.origin)
        merchant = await named_merchant(app)
        paid = await send_invoice(app, merchant, amount=1500)
        failed = await send_invoice(app, merchant, amount=2500)
        await configure(app, faults__callbacks__drop=1.0)
        await tap(app, CUSTOMER, paid.pay)
        prompt = await wait_prompt(app)
        await pushed(database_url, count=1)
        pending = await query(paid.number)
        await answer(app, prompt, "accept")
        succeeded = await query(paid.number)
        await tap(app, CUSTOMER, failed.pay)
        await answer(app, await wait_prompt(app, count=2), "cancel")
        await pushed(database_url, count=2)
        cancelled = await query(failed.number)
        await drained(database_url)
        inbox = await paid.customer.inbox()

    assert pending.exit_code == 0 and "still processing" in pending.output
    assert "daraja call failed" not in pending.output  # the usual answer, not a failure
    assert succeeded.exit_code == 0 and "SUCCESS" in succeeded.output
    assert cancelled.exit_code == 0 and "FAILED (result 1032)" in cancelled.output
    assert (await the_invoice(database_url, paid.number)).status is InvoiceStatus.PAID
    assert (await the_invoice(database_url, failed.number)).status is InvoiceStatus.SENT
    [receipt] = with_text(inbox, RECEIPT)
    assert "confirmed by M-PESA" in receipt
    assert len(with_text(inbox, FAILED)) == 1


async def test_an_unreadable_callback_is_kept_once_listed_masked_and_resolved(
    cli: Invoke, database_url: str
) -> None:
    """Behind the right path secret, a body we cannot read may be Daraja's only word that a
    customer paid: still a 400, but kept for review (an empty probe, or `{}`, is not)."""
    secret = "s" * 24
    app = create_app(
        make_settings(database_url=database_url, mpesa_callback_secret=secret), run_worker=False
    )
    no_id = callback_body(fake_prompt(), receipt="UKEPT12345")
    del no_id["Body"]["stkCallback"]["CheckoutRequestID"]
    bodies = [b"not json", b"not json", json.dumps(no_id).encode(), b"", b"  ", b"{}"]
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            path = f"/payments/stk/callback/{secret}"
            answers = [await http.post(path, content=body) for body in bodies]

    kept = await rows(database_url, InboxEvent, InboxEvent.source == "mpesa.unreadable")
    listed = (await asyncio.to_thread(cli, "payments", "review")).output
    assert [a.status_code for a in answers] == [400] * len(bodies)
    assert sorted(event.payload["body"] for event in kept) == sorted(
        [json.dumps(no_id), "not json"]
    )
    assert "2 STK callback(s) that could not be read" in listed
    assert "UKEPT12345" in listed and "not JSON" in listed and "CheckoutRequestID" in listed
    assert MASKED in listed and CUSTOMER not in listed

    [text_one] = [event for event in kept if event.payload["body"] == "not json"]
    as_paid = await asyncio.to_thread(
        cli, "payments", "resolve", str(text_one.id), "--paid", "--note", "x"
    )
    assert as_paid.exit_code == 1 and "could not be read, not a payment" in as_paid.output
    done = await asyncio.to_thread(
        cli, "payments", "resolve", str(text_one.id), "--note", "a probe"
    )
    again = await asyncio.to_thread(cli, "payments", "resolve", str(text_one.id), "--note", "x")
    after = (await asyncio.to_thread(cli, "payments", "review")).output
    everything = (await asyncio.to_thread(cli, "payments", "review", "--all")).output
    assert done.exit_code == 0 and "resolved unreadable callback" in done.output
    assert again.exit_code == 1 and "resolved already" in again.output
    assert "1 STK callback(s)" in after and str(text_one.id) not in after
    assert str(text_one.id) in everything and "a probe" in everything


def test_an_unreadable_callbacks_excerpt_masks_the_number_in_its_checkout_id() -> None:
    """Daraja's CheckoutRequestIDs end with the payer's national number."""
    body = '{"Body": {"stkCallback": {"CheckoutRequestID": "ws_CO_28112026101500712345678",'
    event = InboxEvent(
        id=uuid.uuid4(),
        source="mpesa.unreadable",
        external_id="x",
        payload={"body": body, "bytes": len(body), "reason": "no ResultCode"},
        received_at=utcnow(),
    )

    listed = render_unreadable([event])

    assert "ws_CO_281120261015007•••••678" in listed and "712345678" not in listed
