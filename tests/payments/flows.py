"""Shared steps of the payment tests: invoices sent, taps, prompts, callbacks, waiting for rows."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import sqlalchemy as sa

from invoiceiq.db.engine import make_engine, make_session_factory
from invoiceiq.db.models import Invoice, Payment
from invoiceiq.kit.clock import nairobi, utcnow
from invoiceiq.outbox.models import OutboxMessage
from invoiceiq.outbox.states import OutboxStatus
from support.app_server import Message, Phone, RunningApp, rows, texts_of

MERCHANT = "254700000001"
CUSTOMER = "254712345678"
STRANGER = "254722000111"
BUSINESS = "Wanjiku Designs"
CHECK_PHONE = "Check your phone"
RECEIPT = "Payment received"
MERCHANT_RECEIPT = "Paid: invoice"
REVIEW = "needs a review"
FAILED = "did not go through"


@dataclass
class Sent:
    merchant: Phone
    customer: Phone
    number: str
    pay: str


async def named_merchant(app: RunningApp, phone: str = MERCHANT, name: str = BUSINESS) -> Phone:
    merchant = app.phone(phone)
    await merchant.say(f"name {name}")
    await merchant.next_reply()
    return merchant


async def send_invoice(
    app: RunningApp, merchant: Phone, *, customer: str = CUSTOMER, amount: int = 1500
) -> Sent:
    """The merchant invoices `customer`; returns once the invoice reached the customer."""
    phone = app.phone(customer)

    def pay_buttons(messages: list[Message]) -> list[str]:
        ids = [b["id"] for m in messages for b in m["buttons"] or ()]
        return [i for i in ids if i.startswith("pay:")]

    known = set(pay_buttons(await phone.inbox()))
    await merchant.say(f"invoice 0{customer[3:]} {amount} Logo design")
    await merchant.next_reply()
    found = await phone.wait_for(lambda ms: bool(set(pay_buttons(ms)) - known))
    [pay] = set(pay_buttons(found)) - known
    return Sent(merchant, phone, pay.removeprefix("pay:"), pay)


async def invoice_sent(app: RunningApp, *, amount: int = 1500) -> Sent:
    return await send_invoice(app, await named_merchant(app), amount=amount)


async def tap(app: RunningApp, phone: str, button_id: str) -> None:
    """A tap on the template's quick-reply Pay button (the invoice went out as a template)."""
    answer = await app.control(
        "POST", f"/phones/{phone}/messages", json={"button_id": button_id, "kind": "template"}
    )
    assert answer["webhook_status"] == 200, answer


async def prompts(app: RunningApp, phone: str = CUSTOMER, state: str | None = None) -> list[Any]:
    params = {"phone": phone, **({"state": state} if state else {})}
    found: list[Any] = await app.control("GET", "/mpesa/prompts", params=params)
    return found


async def wait_prompt(
    app: RunningApp, phone: str = CUSTOMER, *, count: int = 1, timeout: float = 15.0
) -> dict[str, Any]:
    """The `count`-th prompt (oldest first) once it exists."""
    async with asyncio.timeout(timeout):
        while len(found := await prompts(app, phone)) < count:
            await asyncio.sleep(0.05)
    prompt: dict[str, Any] = found[count - 1]
    return prompt


async def answer(app: RunningApp, prompt: dict[str, Any], action: str) -> None:
    await app.control(
        "POST", f"/mpesa/prompts/{prompt['checkout_request_id']}", json={"action": action}
    )


async def configure(app: RunningApp, **changes: Any) -> None:
    """Change parts of the simulator's config (PUT replaces it whole, so read it first)."""
    config = await app.control("GET", "/config")
    for path, value in changes.items():
        node = config
        *parents, leaf = path.split("__")
        for name in parents:
            node = node[name]
        node[leaf] = value
    await app.control("PUT", "/config", json=config)


def callback_body(
    prompt: dict[str, Any],
    *,
    code: int = 0,
    amount: Any = None,
    receipt: str | None = None,
    phone: str | None = None,
) -> dict[str, Any]:
    """An STK callback as Daraja posts it, for `prompt` (success unless `code` says otherwise)."""
    callback: dict[str, Any] = {
        "MerchantRequestID": prompt["merchant_request_id"],
        "CheckoutRequestID": prompt["checkout_request_id"],
        "ResultCode": code,
        "ResultDesc": "The service request is processed successfully." if code == 0 else "No.",
    }
    if code == 0:
        stamp = nairobi(utcnow()).strftime("%Y%m%d%H%M%S")
        payer = phone or prompt["phone"]
        callback["CallbackMetadata"] = {
            "Item": [
                {"Name": "Amount", "Value": prompt["amount"] if amount is None else amount},
                {"Name": "MpesaReceiptNumber", "Value": receipt or new_receipt()},
                {"Name": "Balance"},
                {"Name": "TransactionDate", "Value": int(stamp)},
                {"Name": "PhoneNumber", "Value": int(payer) if payer.isdigit() else payer},
            ]
        }
    return {"Body": {"stkCallback": callback}}


def new_receipt() -> str:
    return "U" + secrets.token_hex(5).upper()[:9]


def fake_prompt(*, phone: str = CUSTOMER, amount: int = 1500) -> dict[str, Any]:
    """The ids of a push nobody made."""
    return {
        "checkout_request_id": f"ws_CO_{secrets.randbelow(10**12):012d}",
        "merchant_request_id": f"{secrets.randbelow(90000) + 10000}-1",
        "phone": phone,
        "amount": amount,
    }


async def post_callback(app: RunningApp, body: Any, *, secret: str | None = None) -> httpx.Response:
    secret = secret or app.settings.mpesa_callback_secret.get_secret_value()
    if isinstance(body, bytes):
        return await app.http.post(f"/payments/stk/callback/{secret}", content=body)
    return await app.http.post(f"/payments/stk/callback/{secret}", json=body)


async def wait_rows(
    database_url: str,
    model: Any,
    predicate: Callable[[list[Any]], bool],
    *where: Any,
    timeout: float = 15.0,
) -> list[Any]:
    """Poll the database (one engine for the whole wait) until the rows satisfy `predicate`."""
    found: list[Any] = []
    engine = make_engine(database_url)
    try:
        async with asyncio.timeout(timeout):
            while True:
                async with make_session_factory(engine)() as session:
                    found = list(await session.scalars(sa.select(model).where(*where)))
                if predicate(found):
                    return found
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"{model.__name__} rows never matched: {found}") from None
    finally:
        await engine.dispose()


async def the_payment(
    database_url: str, predicate: Callable[[Payment], bool], *, timeout: float = 15.0
) -> Payment:
    """Wait until there is exactly one payment and it satisfies `predicate`."""
    [payment] = await wait_rows(
        database_url, Payment, lambda ps: len(ps) == 1 and predicate(ps[0]), timeout=timeout
    )
    return payment


async def the_invoice(database_url: str, number: str) -> Invoice:
    [invoice] = await rows(database_url, Invoice, Invoice.number == number)
    return invoice


async def drained(database_url: str, timeout: float = 15.0) -> None:
    """Wait until the outbox has nothing due or running: every message caused so far is out."""
    busy = (
        sa.select(sa.func.count())
        .select_from(OutboxMessage)
        .where(
            sa.or_(
                OutboxMessage.status == OutboxStatus.RUNNING,
                sa.and_(
                    OutboxMessage.status == OutboxStatus.PENDING,
                    OutboxMessage.available_at <= sa.bindparam("now"),
                ),
            )
        )
    )
    engine = make_engine(database_url)
    try:
        async with asyncio.timeout(timeout):
            while True:
                async with make_session_factory(engine)() as session:
                    if not await session.scalar(busy, {"now": utcnow()}):
                        break
                await asyncio.sleep(0.05)
    finally:
        await engine.dispose()
    await asyncio.sleep(0.2)  # statuses and the last webhook round trips


def with_text(messages: list[Message], fragment: str) -> list[str]:
    return [text for text in texts_of(messages) if fragment in text]


def nairobi_stamp(moment: datetime) -> str:
    return nairobi(moment).strftime("%d %b %Y, %H:%M")
