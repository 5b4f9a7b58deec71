"""Delivery to the customer, end to end over real HTTP with the simulator: a send that ends
dead in the outbox is told to the merchant once, with something to do that works; a customer
who sent STOP still gets the receipt of a payment they make; `status` shows how far the
invoice message got, and the receipt number once paid."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from invoiceiq.db.models import Invoice, MessageLog, OutboxMessage, Payment
from invoiceiq.invoices.states import InvoiceStatus
from invoiceiq.notifications.models import DeliveryStatus, Direction
from invoiceiq.outbox.states import OutboxStatus
from invoiceiq.simulator.config import Dice
from payments.flows import wait_rows
from support.app_server import Phone, RunningApp, rows, running_app

MERCHANT = "254700000001"
CUSTOMER = "254712345678"
INVOICE_NUMBER = re.compile(r"INV[0-9A-Z]{7}")


async def named_merchant(app: RunningApp) -> Phone:
    merchant = app.phone(MERCHANT)
    await merchant.say("name Wanjiku Designs")
    await merchant.next_reply()
    return merchant


def seed_failing_first(count: int, probability: float, *, then_ok: int) -> int:
    """A simulator seed whose first `count` fault rolls fail and the next `then_ok` pass.

    Only `error_5xx` is set, so each send to the fake rolls the dice exactly once, in the
    order the sends arrive: whichever of the first two sends comes first, both fail.
    """
    for seed in range(1, 100_000):
        dice = Dice(seed)
        rolls = [dice.roll(probability) for _ in range(count + then_ok)]
        if all(rolls[:count]) and not any(rolls[count:]):
            return seed
    raise AssertionError("no such seed")


async def test_a_send_that_ends_dead_is_told_to_the_merchant_once(database_url: str) -> None:
    """Every attempt of the invoice fails (WhatsApp answers 500; one attempt allowed): the
    row goes dead, the merchant hears it once and is told to `remind`, which then works at
    once (the reminder interval spares customers repeats, and they got nothing)."""
    async with running_app(database_url, outbox_max_attempts=1) as app:
        merchant, customer = await named_merchant(app), app.phone(CUSTOMER)
        # The invoice and the merchant's confirmation fail; the alert after them gets through.
        seed = seed_failing_first(2, 0.5, then_ok=4)
        faults = {"whatsapp": {"error_5xx": 0.5}}
        await app.control("PUT", "/config", json={"seed": seed, "faults": faults})
        await merchant.say("invoice 0712345678 1500 Logo design")
        alert = await merchant.wait_for(lambda ms: "could not deliver" in ms[-1]["text"])
        await asyncio.sleep(0.4)
        assert len(await merchant.inbox()) == len(alert)  # told once, and nothing else
        assert await customer.inbox() == []
        [invoice] = await rows(database_url, Invoice)
        [invoice_log] = await rows(database_url, MessageLog, MessageLog.kind == "invoice")
        [dead] = await rows(
            database_url,
            OutboxMessage,
            OutboxMessage.payload["message_log_id"].as_string() == str(invoice_log.id),
        )
        await app.control("PUT", "/config", json={"seed": 1})  # no more faults
        await merchant.say(f"remind {invoice.number}")
        reminder = (await customer.wait_for_count(1))[0]
    text = alert[-1]["text"]
    assert invoice.number in text and "2547•••••678" in text and CUSTOMER not in text
    assert "could not be reached" in text and f"remind {invoice.number}" in text
    assert f"/i/{invoice.public_token}" in text
    assert invoice.status is InvoiceStatus.PENDING
    assert invoice_log.status is DeliveryStatus.FAILED
    assert dead.status is OutboxStatus.DEAD
    assert reminder["template"]["name"] == "invoice_reminder"
    assert f"pay:{invoice.number}" in [b["id"] for b in reminder["buttons"]]


async def pay(app: RunningApp, customer: Phone, pay_button: str) -> dict[str, Any]:
    await customer.tap(pay_button, kind="template")
    async with asyncio.timeout(15):
        while not (
            prompts := await app.control(
                "GET", "/mpesa/prompts", params={"phone": CUSTOMER, "state": "open"}
            )
        ):
            await asyncio.sleep(0.05)
    prompt: dict[str, Any] = prompts[0]
    await app.control(
        "POST", f"/mpesa/prompts/{prompt['checkout_request_id']}", json={"action": "accept"}
    )
    return prompt


async def test_stop_never_blocks_a_receipt_and_status_shows_it(database_url: str) -> None:
    async with running_app(database_url) as app:
        merchant, customer = await named_merchant(app), app.phone(CUSTOMER)
        await merchant.say("invoice 0712345678 1500 Logo design")
        [invoice_message] = await customer.wait_for_count(1)
        await merchant.wait_for_count(2)
        number = invoice_message["buttons"][0]["id"].removeprefix("pay:")
        await merchant.wait_for(lambda ms: ms[-1]["status"] == "read")
        await customer.wait_for(lambda ms: ms[0]["status"] == "read")
        # The phone shows "read" when WhatsApp posts the status; the app applies it a moment
        # later (at once, or after its send's answer is recorded if the status overtook it).
        await wait_rows(
            database_url,
            MessageLog,
            lambda entries: [e.status for e in entries] == [DeliveryStatus.READ],
            MessageLog.phone == CUSTOMER,
            MessageLog.kind == "invoice",
        )
        await merchant.say(f"status {number}")
        before = (await merchant.next_reply())["text"]

        await customer.say("STOP")
        assert "won't receive invoices" in (await customer.next_reply())["text"]
        await pay(app, customer, invoice_message["buttons"][0]["id"])
        receipt = await customer.wait_for(lambda ms: "Payment received" in ms[-1]["text"])
        await merchant.wait_for(lambda ms: f"Paid: invoice {number}" in ms[-1]["text"])
        await merchant.say(f"status {number}")
        after = (await merchant.next_reply())["text"]
    [payment] = await rows(database_url, Payment)
    assert payment.receipt_number and payment.receipt_number in receipt[-1]["text"]
    assert f"Invoice {number}: sent, waiting for payment" in before
    assert "Message: read by the customer" in before
    assert f"remind {number}" in before
    assert f"Invoice {number}: paid" in after
    assert f"M-PESA receipt {payment.receipt_number}" in after
    assert "remind" not in after
    outbound_to_customer = await rows(
        database_url,
        MessageLog,
        MessageLog.phone == CUSTOMER,
        MessageLog.direction == Direction.OUTBOUND,
    )
    assert "receipt" in {entry.kind for entry in outbound_to_customer}
