"""STK callbacks end to end: repeats, order, loss, races, and forgeries that must change nothing.

Callback bodies the test posts itself are built from the simulator's own prompt (its ids, phone
and amount); `faults.callbacks.drop` keeps the simulator's own callback out of the way.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from invoiceiq.cli import app as cli_app
from invoiceiq.db.models import Payment
from invoiceiq.inbox.models import InboxEvent
from invoiceiq.invoices.states import InvoiceStatus
from invoiceiq.payments.jobs import callback_url
from invoiceiq.payments.states import PaymentStatus
from payments.flows import (
    CHECK_PHONE,
    CUSTOMER,
    FAILED,
    MERCHANT_RECEIPT,
    RECEIPT,
    REVIEW,
    answer,
    callback_body,
    configure,
    drained,
    fake_prompt,
    invoice_sent,
    post_callback,
    tap,
    the_invoice,
    the_payment,
    wait_prompt,
    wait_rows,
    with_text,
)
from support.app_server import rows, running_app

ACCEPTED = {"ResultCode": 0, "ResultDesc": "Accepted"}


def is_(status: PaymentStatus) -> Any:
    return lambda payment: payment.status is status


async def test_the_same_success_three_times_pays_once(database_url: str) -> None:
    async with running_app(database_url) as app:
        sent = await invoice_sent(app)
        await configure(app, faults__callbacks__drop=1.0)
        await tap(app, CUSTOMER, sent.pay)
        prompt = await wait_prompt(app)
        await answer(app, prompt, "accept")
        body = callback_body(prompt, receipt="UAB12CD34E")
        answers = await asyncio.gather(*(post_callback(app, body) for _ in range(3)))
        payment = await the_payment(database_url, is_(PaymentStatus.SUCCESS))
        await drained(database_url)
        customer_inbox, merchant_inbox = await sent.customer.inbox(), await sent.merchant.inbox()

    assert [(a.status_code, a.json()) for a in answers] == [(200, ACCEPTED)] * 3
    assert payment.receipt_number == "UAB12CD34E"
    assert len(with_text(customer_inbox, RECEIPT)) == 1
    assert len(with_text(merchant_inbox, MERCHANT_RECEIPT)) == 1
    assert len(await rows(database_url, InboxEvent, InboxEvent.source == "mpesa")) == 1
    assert (await the_invoice(database_url, sent.number)).status is InvoiceStatus.PAID


async def test_a_failure_then_a_success_for_the_same_push_is_paid(database_url: str) -> None:
    async with running_app(database_url) as app:
        sent = await invoice_sent(app)
        await configure(app, faults__callbacks__drop=1.0)
        await tap(app, CUSTOMER, sent.pay)
        prompt = await wait_prompt(app)
        await answer(app, prompt, "accept")  # what M-PESA's query will say
        assert (await post_callback(app, callback_body(prompt, code=1037))).status_code == 200
        await the_payment(database_url, is_(PaymentStatus.FAILED))
        # Production may mask or hash the payer's number: the claim still counts.
        hashed = "c0ffee" * 10
        await post_callback(app, callback_body(prompt, receipt="UFS12CD34E", phone=hashed))
        payment = await the_payment(database_url, is_(PaymentStatus.SUCCESS))
        await drained(database_url)
        customer_inbox = await sent.customer.inbox()

    assert payment.receipt_number == "UFS12CD34E" and not payment.needs_review
    assert len(with_text(customer_inbox, FAILED)) == 1
    assert len(with_text(customer_inbox, RECEIPT)) == 1
    assert (await the_invoice(database_url, sent.number)).status is InvoiceStatus.PAID


async def test_a_dropped_callback_is_settled_by_the_reconciler(database_url: str) -> None:
    async with running_app(database_url, reconcile_after=1) as app:
        sent = await invoice_sent(app)
        await configure(app, faults__callbacks__drop=1.0)
        await tap(app, CUSTOMER, sent.pay)
        prompt = await wait_prompt(app)
        await answer(app, prompt, "accept")
        payment = await the_payment(database_url, is_(PaymentStatus.SUCCESS))
        await drained(database_url)
        [receipt] = with_text(await sent.customer.inbox(), RECEIPT)
        [merchant_receipt] = with_text(await sent.merchant.inbox(), MERCHANT_RECEIPT)
        # The callback turns up after all: it only fills in the receipt number.
        await post_callback(app, callback_body(prompt, receipt="ULATE1234X"))
        late = await the_payment(database_url, lambda p: p.receipt_number == "ULATE1234X")
        await drained(database_url)
        assert len(with_text(await sent.customer.inbox(), RECEIPT)) == 1

    assert payment.confirmed_by == "query" and payment.receipt_number is None
    assert "confirmed by M-PESA" in receipt and "confirmed by M-PESA" in merchant_receipt
    assert late.status is PaymentStatus.SUCCESS and not late.needs_review
    assert (await the_invoice(database_url, sent.number)).status is InvoiceStatus.PAID


@pytest.mark.parametrize("action", ["accept", "cancel"])
async def test_a_callback_that_overtakes_the_push_answer_is_applied(
    database_url: str, action: str
) -> None:
    async with running_app(database_url) as app:
        sent = await invoice_sent(app)
        # Daraja holds the push's answer for 1 s: the customer answers before the app knows
        # the CheckoutRequestID, and the callback arrives first.
        await configure(app, faults__daraja__timeout_after=1.0, timeout_hold_s=1)
        await tap(app, CUSTOMER, sent.pay)
        prompt = await wait_prompt(app)
        await answer(app, prompt, action)
        wanted = PaymentStatus.SUCCESS if action == "accept" else PaymentStatus.FAILED
        payment = await the_payment(
            database_url, lambda p: p.status is wanted and p.request_body is not None
        )
        await drained(database_url)
        customer_inbox = await sent.customer.inbox()
        events = await rows(database_url, InboxEvent, InboxEvent.source == "mpesa")

    assert payment.checkout_request_id == prompt["checkout_request_id"]
    assert [e.processed_at is not None for e in events] == [True]
    # Nobody is told to check a phone whose prompt is already answered.
    assert not with_text(customer_inbox, CHECK_PHONE)
    assert len(with_text(customer_inbox, RECEIPT if action == "accept" else FAILED)) == 1


async def test_a_wrong_path_secret_is_404_and_changes_nothing(database_url: str) -> None:
    async with running_app(database_url) as app:
        sent = await invoice_sent(app)
        await configure(app, faults__callbacks__drop=1.0)
        await tap(app, CUSTOMER, sent.pay)
        prompt = await wait_prompt(app)
        await answer(app, prompt, "accept")
        body = callback_body(prompt)
        wrong = [
            await post_callback(app, body, secret=secret)
            for secret in ("nope", "dev-callback-secreT", "dev-callback-secret-old")
        ]
        await asyncio.sleep(0.3)
        payment = await the_payment(database_url, is_(PaymentStatus.INITIATED))

    assert [r.status_code for r in wrong] == [404, 404, 404]
    assert await rows(database_url, InboxEvent, InboxEvent.source == "mpesa") == []
    assert payment.receipt_number is None and payment.callback_body is None


async def test_the_previous_secret_is_accepted_during_a_rotation(database_url: str) -> None:
    settings = {"mpesa_callback_secret": "new-secret", "mpesa_callback_secret_previous": "old"}
    async with running_app(database_url, **settings) as app:
        sent = await invoice_sent(app)
        await configure(app, faults__callbacks__drop=1.0)
        await tap(app, CUSTOMER, sent.pay)
        prompt = await wait_prompt(app)
        await answer(app, prompt, "accept")
        refused = await post_callback(app, callback_body(prompt), secret="older")
        accepted = await post_callback(app, callback_body(prompt), secret="old")
        payment = await the_payment(database_url, is_(PaymentStatus.SUCCESS))

    assert refused.status_code == 404 and accepted.status_code == 200
    # Pushes name the new secret (kept out of the stored copy of the request).
    assert callback_url(app.settings).endswith("/payments/stk/callback/new-secret")
    assert payment.request_body is not None
    assert payment.request_body["CallBackURL"].endswith("/payments/stk/callback/•••")


async def test_an_unknown_checkout_id_pays_nothing_and_is_kept_for_review(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_app(database_url, reconcile_after=0.3) as app:
        sent = await invoice_sent(app)
        # A success for a push nobody made, for the customer's phone and the invoice amount.
        claim = callback_body(fake_prompt(), receipt="UFORGED123")
        assert (await post_callback(app, claim)).status_code == 200
        [kept] = await wait_rows(database_url, Payment, lambda ps: len(ps) == 1)
        await drained(database_url)
        merchant_inbox = await sent.merchant.inbox()

    assert kept.invoice_id is None and kept.needs_review
    assert kept.status is PaymentStatus.FAILED and kept.receipt_number is None
    assert (await the_invoice(database_url, sent.number)).status is InvoiceStatus.SENT
    assert not with_text(merchant_inbox, MERCHANT_RECEIPT)
    [event] = await rows(database_url, InboxEvent, InboxEvent.source == "mpesa")
    assert event.processed_at is not None and event.error == "no matching attempt"
    monkeypatch.chdir(tmp_path)  # no developer .env
    listed = await asyncio.to_thread(
        CliRunner().invoke, cli_app, ["payments", "review"], env={"DATABASE_URL": database_url}
    )
    assert listed.exit_code == 0 and str(kept.id) in listed.output
    assert "matches no payment attempt" in listed.output and CUSTOMER not in listed.output


async def test_a_success_the_query_denies_is_flagged_and_not_paid(database_url: str) -> None:
    async with running_app(database_url) as app:
        sent = await invoice_sent(app)
        await tap(app, CUSTOMER, sent.pay)
        prompt = await wait_prompt(app)
        await answer(app, prompt, "cancel")
        await the_payment(database_url, is_(PaymentStatus.FAILED))
        await post_callback(app, callback_body(prompt, receipt="UDENIED123"))
        payment = await the_payment(database_url, lambda p: p.needs_review)
        await drained(database_url)
        merchant_inbox = await sent.merchant.inbox()
        customer_inbox = await sent.customer.inbox()

    assert payment.status is PaymentStatus.FAILED and payment.receipt_number is None
    assert payment.review_reason and "denies" in payment.review_reason
    [alert] = with_text(merchant_inbox, REVIEW)
    assert sent.number in alert
    assert not with_text(merchant_inbox, MERCHANT_RECEIPT)
    assert not with_text(customer_inbox, RECEIPT)
    assert (await the_invoice(database_url, sent.number)).status is InvoiceStatus.SENT


async def test_an_amount_other_than_the_attempts_is_flagged_and_only_the_query_pays(
    database_url: str,
) -> None:
    """The callback is a claim: one for another amount pays nothing and is flagged (the
    merchant told). M-PESA's query is a fact: that the prompt, for the amount we pushed, was
    paid; it pays the invoice, the flag staying for the record, without the claimed receipt."""
    async with running_app(database_url, reconcile_after=0.3) as app:
        sent = await invoice_sent(app)
        await configure(app, faults__callbacks__drop=1.0)
        await tap(app, CUSTOMER, sent.pay)
        prompt = await wait_prompt(app)
        await post_callback(app, callback_body(prompt, amount=1, receipt="UCHEAP1234"))
        flagged = await the_payment(database_url, lambda p: p.needs_review)
        invoice_then = await the_invoice(database_url, sent.number)
        await answer(app, prompt, "accept")  # what M-PESA's query will say
        payment = await the_payment(database_url, is_(PaymentStatus.SUCCESS))
        await drained(database_url)
        merchant_inbox = await sent.merchant.inbox()

    assert flagged.status is PaymentStatus.INITIATED and flagged.receipt_number is None
    assert flagged.review_reason == "M-PESA reported KSh 1, the attempt was for KSh 1,500"
    assert invoice_then.status is InvoiceStatus.SENT
    assert payment.confirmed_by == "query" and payment.receipt_number is None
    assert payment.needs_review and payment.review_reason == flagged.review_reason
    assert with_text(merchant_inbox, REVIEW) and with_text(merchant_inbox, MERCHANT_RECEIPT)
    assert (await the_invoice(database_url, sent.number)).status is InvoiceStatus.PAID


async def test_a_second_success_on_a_paid_invoice_is_recorded_flagged_and_told(
    database_url: str,
) -> None:
    # Without query confirmation (as on the sandbox) the posted callbacks decide everything.
    settings = {"mpesa_confirm_callbacks": False, "pay_cooldown": 0}
    async with running_app(database_url, **settings) as app:
        sent = await invoice_sent(app)
        await configure(app, faults__callbacks__drop=1.0)
        await tap(app, CUSTOMER, sent.pay)
        first = await wait_prompt(app)
        await answer(app, first, "timeout")  # frees the phone for the next prompt
        await post_callback(app, callback_body(first, code=1037))
        await the_payment(database_url, is_(PaymentStatus.FAILED))
        await tap(app, CUSTOMER, sent.pay)
        second = await wait_prompt(app, count=2)
        await post_callback(app, callback_body(second, receipt="USECOND123"))
        await wait_rows(database_url, Payment, lambda ps: len(ps) == 2)
        await sent.merchant.wait_for(lambda ms: bool(with_text(ms, MERCHANT_RECEIPT)))
        # The first push was paid after all: M-PESA reports it late.
        await post_callback(app, callback_body(first, receipt="UFIRST1234"))
        await wait_rows(
            database_url, Payment, lambda ps: all(p.status is PaymentStatus.SUCCESS for p in ps)
        )
        await drained(database_url)
        merchant_inbox, customer_inbox = await sent.merchant.inbox(), await sent.customer.inbox()

    [late] = await rows(database_url, Payment, Payment.receipt_number == "UFIRST1234")
    assert late.needs_review and late.review_reason
    assert "already paid" in late.review_reason
    [alert] = with_text(merchant_inbox, REVIEW)
    assert sent.number in alert and "KSh 1,500" in alert
    assert len(with_text(merchant_inbox, MERCHANT_RECEIPT)) == 1
    # The customer paid twice: each payment gets its receipt.
    receipts = with_text(customer_inbox, RECEIPT)
    assert len(receipts) == 2 and any("UFIRST1234" in r for r in receipts)
    assert (await the_invoice(database_url, sent.number)).status is InvoiceStatus.PAID


async def test_a_malformed_callback_gets_400_and_changes_nothing(database_url: str) -> None:
    async with running_app(database_url) as app:
        sent = await invoice_sent(app)
        await tap(app, CUSTOMER, sent.pay)
        prompt = await wait_prompt(app)
        too_long = callback_body(prompt)
        too_long["Body"]["stkCallback"]["CheckoutRequestID"] += "x" * 80
        no_id = callback_body(prompt)
        del no_id["Body"]["stkCallback"]["CheckoutRequestID"]
        bodies: list[Any] = [
            b"not json",
            b"[1, 2]",
            {"Body": {}},
            no_id,
            callback_body(prompt, amount="abc"),
            callback_body(prompt, amount=1500.5),
            too_long,
        ]
        answers = [await post_callback(app, body) for body in bodies]
        await asyncio.sleep(0.2)
        payment = await the_payment(database_url, is_(PaymentStatus.INITIATED))

    assert [a.status_code for a in answers] == [400] * len(bodies)
    assert {a.json()["error"]["code"] for a in answers} == {"malformed_callback"}
    assert await rows(database_url, InboxEvent, InboxEvent.source == "mpesa") == []
    # Each is kept for review as it came, since one may be the only word that someone paid.
    kept = await rows(database_url, InboxEvent, InboxEvent.source == "mpesa.unreadable")
    assert len(kept) == len(bodies) and all(event.processed_at is None for event in kept)
    assert payment.callback_body is None and not payment.needs_review
    assert (await the_invoice(database_url, sent.number)).status is InvoiceStatus.SENT
