"""Getting paid, end to end over real HTTP with the simulator: tap → STK push → callback."""

from __future__ import annotations

import asyncio
from typing import Any

from invoiceiq.db.models import Invoice, Payment
from invoiceiq.invoices.states import InvoiceStatus
from invoiceiq.payments.states import PaymentStatus
from support.app_server import Phone, RunningApp, rows, running_app

MERCHANT = "254700000001"
CUSTOMER = "254712345678"


async def invoice_sent(app: RunningApp, amount: int = 1500) -> tuple[Phone, Phone, str]:
    merchant, customer = app.phone(MERCHANT), app.phone(CUSTOMER)
    await merchant.say("name Wanjiku Designs")
    await merchant.next_reply()
    await merchant.say(f"invoice 0712345678 {amount} Logo design")
    [message] = await customer.wait_for_count(1)
    await merchant.wait_for_count(2)
    pay = message["buttons"][0]["id"]
    return merchant, customer, pay


async def open_prompts(app: RunningApp, phone: str = CUSTOMER) -> list[dict[str, Any]]:
    prompts: list[dict[str, Any]] = await app.control(
        "GET", "/mpesa/prompts", params={"phone": phone, "state": "open"}
    )
    return prompts


async def wait_prompt(app: RunningApp, phone: str = CUSTOMER) -> dict[str, Any]:
    async with asyncio.timeout(15):
        while not (prompts := await open_prompts(app, phone)):
            await asyncio.sleep(0.05)
    return prompts[0]


async def test_happy_path(database_url: str) -> None:
    async with running_app(database_url) as app:
        merchant, customer, pay = await invoice_sent(app)
        await customer.tap(pay, kind="template")
        prompt = await wait_prompt(app)
        [invoice] = await rows(database_url, Invoice)
        assert prompt["amount"] == 1500 and prompt["account_reference"] == invoice.number
        check = await customer.wait_for(lambda ms: "Check your phone" in ms[-1]["text"])
        await app.control("POST", f"/mpesa/prompts/{prompt['checkout_request_id']}", json={"action": "accept"})
        receipt = (await customer.wait_for(lambda ms: "Payment received" in ms[-1]["text"] or "payment of" in ms[-1]["text"]))[-1]
        paid = (await merchant.wait_for(lambda ms: "Paid" in ms[-1]["text"] or "Payment received" in ms[-1]["text"]))[-1]
        print(check[-1]["text"]); print(receipt["text"]); print(paid["text"])
    [invoice] = await rows(database_url, Invoice)
    assert invoice.status is InvoiceStatus.PAID
    [payment] = await rows(database_url, Payment)
    assert payment.status is PaymentStatus.SUCCESS and payment.receipt_number
