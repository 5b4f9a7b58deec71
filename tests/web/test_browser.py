"""The invoice page in a real browser (Debian's chromium, driven by Playwright), over real HTTP.

The whole app runs with its in-process simulator and worker: the click posts the form, the
worker pushes to the fake Daraja, the test answers the PIN prompt through the simulator's
control API, the callback arrives, and the page (polling) shows the outcome without a reload.
Needs /usr/bin/chromium: skipped locally without it, loudly; a failure under CI=true.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from invoiceiq.db.engine import SessionFactory
from invoiceiq.db.models import Invoice, Payment
from invoiceiq.invoices.states import InvoiceStatus
from invoiceiq.kit.clock import utcnow
from invoiceiq.payments.states import PaymentStatus
from support.app_server import RunningApp, rows, running_app
from support.apps import bearer, merchant_with_key

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
CUSTOMER = "254712345678"
UI_TIMEOUT_MS = 20_000

try:
    from playwright.async_api import Browser, Page, async_playwright, expect
except ImportError:  # pragma: no cover - the dev extra installs it
    async_playwright = None  # type: ignore[assignment]


def _need(condition: bool, reason: str) -> None:
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(f"!!! BROWSER TEST SKIPPED: {reason} !!!")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    _need(async_playwright is not None, "the playwright package is not installed")
    _need(CHROMIUM.exists(), f"{CHROMIUM} is missing (apt-get install -y chromium)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


async def new_page(browser: Browser) -> tuple[Page, list[str]]:
    """A page that records script errors and console errors (a CSP violation is one)."""
    page = await browser.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on(
        "console",
        lambda message: problems.append(message.text) if message.type == "error" else None,
    )
    return page, problems


async def issue_invoice(app: RunningApp, sessions: SessionFactory) -> dict[str, Any]:
    """Through the REST API, as a merchant's own system would."""
    _, key = await merchant_with_key(sessions, business_name="Café <b>Wanjiru</b>")
    response = await app.http.post(
        "/api/v1/invoices",
        json={"customer_phone": "0712345678", "amount": 1500, "description": "Cake <script>"},
        headers=bearer(key),
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def open_prompt(app: RunningApp) -> dict[str, Any]:
    async with asyncio.timeout(15):
        while True:
            prompts = await app.control(
                "GET", "/mpesa/prompts", params={"phone": CUSTOMER, "state": "open"}
            )
            if prompts:
                prompt: dict[str, Any] = prompts[0]
                return prompt
            await asyncio.sleep(0.05)


async def click_pay(page: Page) -> None:
    await page.evaluate("window.stillTheSamePage = true")
    await expect(page.get_by_test_id("masked-phone")).to_have_text("2547•••••678")
    await page.get_by_test_id("pay-button").click()
    await expect(page.get_by_test_id("progress")).to_contain_text(
        "Check the phone 2547•••••678", timeout=UI_TIMEOUT_MS
    )


async def test_paying_from_the_page_shows_paid_and_the_receipt_without_a_reload(
    browser: Browser, database_url: str, sessions: SessionFactory
) -> None:
    async with running_app(database_url) as app:
        invoice = await issue_invoice(app, sessions)
        page, problems = await new_page(browser)
        await page.goto(invoice["link"])
        await expect(page.get_by_test_id("business-name")).to_have_text("Café <b>Wanjiru</b>")
        await expect(page.get_by_test_id("description")).to_have_text("Cake <script>")
        await expect(page.get_by_test_id("status")).to_have_text("Unpaid")

        await click_pay(page)
        prompt = await open_prompt(app)
        assert prompt["amount"] == 1500 and prompt["account_reference"] == invoice["number"]
        await app.control(
            "POST", f"/mpesa/prompts/{prompt['checkout_request_id']}", json={"action": "accept"}
        )

        await expect(page.get_by_test_id("status")).to_have_text("Paid", timeout=UI_TIMEOUT_MS)
        [payment] = await rows(database_url, Payment)
        assert payment.status is PaymentStatus.SUCCESS and payment.receipt_number
        await expect(page.get_by_test_id("receipt")).to_have_text(payment.receipt_number)
        await expect(page.get_by_test_id("paid")).to_be_visible()
        await expect(page.get_by_test_id("pay-form")).to_be_hidden()
        await expect(page.get_by_test_id("pdf-link")).to_have_text("Download the receipt (PDF)")
        # When, as a reload would show it.
        await expect(page.get_by_test_id("paid-at")).to_have_text(
            re.compile(r"^\d{2} \w{3} \d{4}, \d{2}:\d{2} \(Nairobi time\)$")
        )
        assert await page.evaluate("window.stillTheSamePage") is True  # no reload happened
        assert problems == []


async def test_a_cancelled_prompt_is_explained_and_can_be_tried_again(
    browser: Browser, database_url: str, sessions: SessionFactory
) -> None:
    async with running_app(database_url, pay_cooldown=0) as app:
        invoice = await issue_invoice(app, sessions)
        page, problems = await new_page(browser)
        await page.goto(invoice["link"])
        await click_pay(page)
        prompt = await open_prompt(app)
        await app.control(
            "POST", f"/mpesa/prompts/{prompt['checkout_request_id']}", json={"action": "cancel"}
        )
        await expect(page.get_by_test_id("progress")).to_have_text(
            "The payment did not go through: you cancelled the M-PESA prompt. You can try again.",
            timeout=UI_TIMEOUT_MS,
        )
        await expect(page.get_by_test_id("status")).to_have_text("Unpaid")
        await page.get_by_test_id("retry").click()
        await expect(page.get_by_test_id("pay-form")).to_be_visible()
        assert await page.evaluate("window.stillTheSamePage") is True
        assert problems == []


async def test_a_page_left_open_never_says_cant_be_paid_when_money_was_taken(
    browser: Browser, database_url: str, sessions: SessionFactory
) -> None:
    """The merchant cancels and M-PESA's success lands for the attempt the page is waiting on
    (set here in one transaction, as a late success is recorded): the polling page says the
    money was received and not to pay again."""
    async with running_app(database_url) as app:
        invoice = await issue_invoice(app, sessions)
        page, problems = await new_page(browser)
        await page.goto(invoice["link"])
        await click_pay(page)
        await open_prompt(app)
        async with sessions() as session, session.begin():
            payment = await session.scalar(sa.select(Payment))
            assert payment is not None
            payment.status, payment.receipt_number = PaymentStatus.SUCCESS, "TKLATE7890"
            payment.completed_at, payment.needs_review = utcnow(), True
            payment.review_reason = "the invoice was already cancelled when this payment came in"
            await session.execute(
                sa.update(Invoice)
                .where(Invoice.id == payment.invoice_id)
                .values(status=InvoiceStatus.CANCELLED, cancelled_at=utcnow())
            )
        await expect(page.get_by_test_id("progress")).to_contain_text(
            "your M-PESA payment (receipt TKLATE7890) was received afterwards",
            timeout=UI_TIMEOUT_MS,
        )
        await expect(page.get_by_test_id("progress")).to_contain_text("Please do not pay again.")
        await expect(page.get_by_test_id("pay-form")).to_be_hidden()
        assert problems == []


async def test_a_page_left_open_shows_the_cancellation_when_pay_is_pressed(
    browser: Browser, database_url: str, sessions: SessionFactory
) -> None:
    """Cancelled by the merchant while the page was open: Pay is refused, and the page then
    shows the invoice as it is (Cancelled, no form), not a live form under "can't be paid"."""
    async with running_app(database_url) as app:
        invoice = await issue_invoice(app, sessions)
        page, problems = await new_page(browser)
        await page.goto(invoice["link"])
        await expect(page.get_by_test_id("status")).to_have_text("Unpaid")
        async with sessions() as session, session.begin():
            await session.execute(
                sa.update(Invoice)
                .where(Invoice.number == invoice["number"])
                .values(status=InvoiceStatus.CANCELLED, cancelled_at=utcnow())
            )
        await page.get_by_test_id("pay-button").click()
        await expect(page.get_by_test_id("status")).to_have_text("Cancelled", timeout=UI_TIMEOUT_MS)
        await expect(page.get_by_test_id("pay-form")).to_be_hidden()
        await expect(page.get_by_test_id("progress")).to_contain_text("cancelled")
        assert await rows(database_url, Payment) == []
        assert problems == [] or all("409" in problem for problem in problems)


async def test_an_unknown_link_shows_the_404_page(browser: Browser, database_url: str) -> None:
    async with running_app(database_url) as app:
        page, _ = await new_page(browser)
        response = await page.goto(f"{app.origin}/i/NoSuchInvoiceTokenAtAll0123456789")
        assert response is not None and response.status == 404
        await expect(page.get_by_test_id("error-page")).to_be_visible()
        await expect(page.locator("h1")).to_have_text("Not found")
        await expect(page.get_by_test_id("error-message")).to_contain_text(
            "This invoice link doesn't work"
        )
        await expect(page.get_by_test_id("error-id")).to_have_text(re.compile(r"^e[0-9a-f]{12}$"))
