"""Getting paid, end to end over real HTTP with the simulator: the Pay tap, the STK push, the
customer's answer on the phone, and what each side is told."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

import httpx

from invoiceiq.db.models import Payment
from invoiceiq.invoices.states import InvoiceStatus
from invoiceiq.kit.clock import utcnow
from invoiceiq.mpesa.client import PAYBILL, DarajaClient
from invoiceiq.mpesa.token_store import MemoryTokenStore
from invoiceiq.payments.states import PaymentStatus
from payments.flows import (
    BUSINESS,
    CHECK_PHONE,
    CUSTOMER,
    FAILED,
    MERCHANT_RECEIPT,
    RECEIPT,
    STRANGER,
    answer,
    configure,
    drained,
    invoice_sent,
    nairobi_stamp,
    named_merchant,
    prompts,
    send_invoice,
    tap,
    the_invoice,
    the_payment,
    wait_prompt,
    wait_rows,
    with_text,
)
from support.app_server import rows, running_app, texts_of


async def test_happy_path_one_push_paid_and_one_receipt_each(database_url: str) -> None:
    async with running_app(database_url) as app:
        sent = await invoice_sent(app)
        await tap(app, CUSTOMER, sent.pay)
        prompt = await wait_prompt(app)
        assert (prompt["phone"], prompt["amount"]) == (CUSTOMER, 1500)
        assert prompt["account_reference"] == sent.number
        await sent.customer.wait_for(lambda ms: bool(with_text(ms, CHECK_PHONE)))
        await answer(app, prompt, "accept")
        payment = await the_payment(database_url, lambda p: p.status is PaymentStatus.SUCCESS)
        await drained(database_url)
        customer_inbox, merchant_inbox = await sent.customer.inbox(), await sent.merchant.inbox()
        # Paid: a second tap is told so, with the receipt, and pushes nothing.
        await tap(app, CUSTOMER, sent.pay)
        already = (await sent.customer.wait_for_count(len(customer_inbox) + 1))[-1]
        assert len(await prompts(app)) == 1

    assert (await the_invoice(database_url, sent.number)).status is InvoiceStatus.PAID
    assert payment.checkout_request_id == prompt["checkout_request_id"]
    assert payment.confirmed_by == "callback" and payment.receipt_number
    # The stored request names the callback URL without its secret, and never the password
    # (the callback came to the URL with the secret, or nothing would be paid).
    assert payment.request_body is not None and "Password" not in payment.request_body
    assert payment.request_body["CallBackURL"] == f"{app.origin}/payments/stk/callback/•••"
    assert "dev-callback-secret" not in str(payment.request_body)
    assert len(with_text(customer_inbox, CHECK_PHONE)) == 1
    [receipt] = with_text(customer_inbox, RECEIPT)
    [merchant_receipt] = with_text(merchant_inbox, MERCHANT_RECEIPT)
    assert payment.completed_at is not None
    stamp = nairobi_stamp(payment.completed_at)  # Nairobi wall time, not UTC
    link = f"{app.origin}/i/"
    for text in (receipt, merchant_receipt):
        for part in (payment.receipt_number, "KSh 1,500", sent.number, stamp, link):
            assert part in text, (part, text)
    assert BUSINESS in receipt
    assert CUSTOMER not in merchant_receipt and "2547•••••678" in merchant_receipt
    assert "already paid" in already["text"] and payment.receipt_number in already["text"]


async def test_another_number_gets_a_refusal_that_reveals_nothing(database_url: str) -> None:
    async with running_app(database_url) as app:
        sent = await invoice_sent(app)
        stranger = app.phone(STRANGER)
        await tap(app, STRANGER, sent.pay)
        refusal = (await stranger.wait_for_count(1))[0]["text"]
        await tap(app, STRANGER, "pay:INV0000000")  # no such invoice: the very same words
        unknown = (await stranger.wait_for_count(2))[1]["text"]
        await drained(database_url)
        assert await prompts(app, STRANGER) == [] and await prompts(app, CUSTOMER) == []
        assert len(await stranger.inbox()) == 2

    assert refusal == unknown
    assert "isn't for this WhatsApp number" in refusal
    for secret in (sent.number, "1,500", "1500", BUSINESS, CUSTOMER, "712345678", "678"):
        assert secret not in refusal
    assert await wait_rows(database_url, Payment, lambda ps: True) == []


async def test_twenty_simultaneous_taps_make_one_push(database_url: str) -> None:
    async with running_app(database_url) as app:
        sent = await invoice_sent(app)
        await asyncio.gather(*(tap(app, CUSTOMER, sent.pay) for _ in range(20)))
        prompt = await wait_prompt(app)
        await sent.customer.wait_for(lambda ms: bool(with_text(ms, CHECK_PHONE)))
        await drained(database_url)
        assert len(await prompts(app)) == 1
        assert len(with_text(await sent.customer.inbox(), CHECK_PHONE)) == 1
        [payment] = await wait_rows(database_url, Payment, lambda ps: True)
        assert payment.status is PaymentStatus.INITIATED
        await answer(app, prompt, "accept")
        await the_payment(database_url, lambda p: p.status is PaymentStatus.SUCCESS)
        await drained(database_url)
        inbox = await sent.customer.inbox()
        assert len(with_text(inbox, CHECK_PHONE)) == 1 and len(with_text(inbox, RECEIPT)) == 1


FAILURES = {
    # action: (result code, the customer's words, the merchant's words)
    "cancel": ("1032", "you cancelled the M-PESA prompt", "the customer cancelled"),
    "timeout": ("1037", "did not answer the M-PESA prompt in time", "did not answer"),
    "wrong_pin": ("2001", "the M-PESA PIN was wrong", "wrong M-PESA PIN"),
    "insufficient_funds": ("1", "balance is not enough", "balance was not enough"),
}


async def test_a_failed_payment_is_told_in_plain_words_and_stays_payable(
    database_url: str,
) -> None:
    async with running_app(database_url) as app:
        merchant = await named_merchant(app)
        invoices = {}
        for n, action in enumerate(FAILURES):
            # One invoice per answer, each its own amount (M-PESA's repeat rule is per amount).
            sent = await send_invoice(app, merchant, amount=1501 + n)
            await tap(app, CUSTOMER, sent.pay)
            await answer(app, await wait_prompt(app, count=n + 1), action)
            await wait_rows(
                database_url,
                Payment,
                lambda ps, n=n: (
                    len(ps) == n + 1 and all(p.status is PaymentStatus.FAILED for p in ps)
                ),
            )
            invoices[action] = sent
        await drained(database_url)
        customer_inbox, merchant_inbox = await sent.customer.inbox(), await merchant.inbox()
        payments = await rows(database_url, Payment)

    everything = " ".join(texts_of(customer_inbox) + texts_of(merchant_inbox))
    for action, (code, customer_words, merchant_words) in FAILURES.items():
        sent = invoices[action]
        invoice = await the_invoice(database_url, sent.number)
        assert invoice.status is InvoiceStatus.SENT  # still payable
        [payment] = [p for p in payments if p.invoice_id == invoice.id]
        assert payment.result_code == code
        [told] = [m for m in customer_inbox if FAILED in m["text"] and sent.number in m["text"]]
        assert customer_words in told["text"]
        assert told["buttons"] == [{"id": sent.pay, "title": "Pay with M-PESA"}]
        [merchant_told] = [t for t in with_text(merchant_inbox, FAILED) if sent.number in t]
        assert merchant_words in merchant_told and "still open" in merchant_told
    # Never M-PESA's own words.
    for raw in ("Request cancelled by user", "DS timeout", "initiator", "balance is insufficient"):
        assert raw not in everything
    assert not with_text(customer_inbox, RECEIPT)


async def test_a_tap_inside_the_cooldown_waits_and_after_it_pushes_again(
    database_url: str,
) -> None:
    cooldown = 3
    async with running_app(database_url, pay_cooldown=cooldown) as app:
        sent = await invoice_sent(app)
        # M-PESA's own repeat rule (code 17) shrunk with the cooldown it mirrors.
        await configure(app, rule_limit_window_s=cooldown)
        await tap(app, CUSTOMER, sent.pay)
        await answer(app, await wait_prompt(app), "cancel")
        failed = await the_payment(database_url, lambda p: p.status is PaymentStatus.FAILED)
        await tap(app, CUSTOMER, sent.pay)
        told = await sent.customer.wait_for(lambda ms: bool(with_text(ms, "Please wait")))
        assert len(await prompts(app)) == 1
        assert failed.push_sent_at is not None
        over = failed.push_sent_at + timedelta(seconds=cooldown) - utcnow()
        await asyncio.sleep(over.total_seconds() + 0.1)
        await tap(app, CUSTOMER, sent.pay)
        second = await wait_prompt(app, count=2)
        await answer(app, second, "accept")
        attempts = await wait_rows(
            database_url,
            Payment,
            lambda ps: (
                sorted(p.status for p in ps) == [PaymentStatus.FAILED, PaymentStatus.SUCCESS]
            ),
        )
        await drained(database_url)
        customer_inbox = await sent.customer.inbox()

    [wait] = with_text(told, "Please wait")
    found = re.search(r"wait (\d+) seconds", wait)
    assert found is not None and 1 <= int(found[1]) <= cooldown
    assert second["phone"] == CUSTOMER and second["amount"] == 1500
    assert sorted(p.result_code or "" for p in attempts) == ["", "1032"]
    assert len(with_text(customer_inbox, RECEIPT)) == 1
    assert (await the_invoice(database_url, sent.number)).status is InvoiceStatus.PAID


async def test_a_prompt_already_on_the_phone_is_explained_and_then_paid(
    database_url: str,
) -> None:
    async with running_app(database_url) as app, httpx.AsyncClient(timeout=10) as http:
        sent = await invoice_sent(app)
        settings = app.settings
        # Another business's prompt is open on the customer's phone.
        other_business = DarajaClient(
            base_url=f"{app.origin}/simulator/daraja",
            consumer_key=settings.mpesa_consumer_key.get_secret_value(),
            consumer_secret=settings.mpesa_consumer_secret.get_secret_value(),
            shortcode=settings.mpesa_shortcode,
            passkey=settings.mpesa_passkey.get_secret_value(),
            transaction_type=PAYBILL,
            party_b=None,
            http=http,
            tokens=MemoryTokenStore(),
        )
        await other_business.stk_push(
            phone=CUSTOMER,
            amount=99,
            account_reference="OTHER1",
            description="Other shop",
            callback_url=f"{app.origin}/elsewhere",
        )
        other = await wait_prompt(app)
        await tap(app, CUSTOMER, sent.pay)
        refused = await the_payment(database_url, lambda p: p.status is PaymentStatus.FAILED)
        told = await sent.customer.wait_for(lambda ms: bool(with_text(ms, FAILED)))
        # The customer clears the other prompt and taps again at once: not told to wait.
        await answer(app, other, "cancel")
        await tap(app, CUSTOMER, sent.pay)
        ours = await wait_prompt(app, count=2)
        await answer(app, ours, "accept")
        await wait_rows(
            database_url,
            Payment,
            lambda ps: any(p.status is PaymentStatus.SUCCESS for p in ps),
        )
        await drained(database_url)
        customer_inbox = await sent.customer.inbox()

    assert refused.result_code == "busy" and refused.checkout_request_id is None
    [text] = with_text(told, FAILED)
    assert "finish or cancel" in text and "Unable to lock" not in text
    assert ours["account_reference"] == sent.number
    # Not told to wait, in any of the waits' words.
    assert not with_text(customer_inbox, "tap Pay again")
    assert not with_text(customer_inbox, "still checking with M-PESA")
    assert len(with_text(customer_inbox, RECEIPT)) == 1
    assert (await the_invoice(database_url, sent.number)).status is InvoiceStatus.PAID
