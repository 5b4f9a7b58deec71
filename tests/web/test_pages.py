"""The public invoice page, its status poll and its security headers (DESIGN §3, §7)."""

from __future__ import annotations

import io
import re
from datetime import datetime, timedelta

import httpx
import pypdf
import pytest
import sqlalchemy as sa

from invoiceiq.config import Settings
from invoiceiq.db.engine import SessionFactory
from invoiceiq.db.models import Invoice, Payment
from invoiceiq.invoices.states import InvoiceStatus
from invoiceiq.kit.clock import utcnow
from invoiceiq.payments.states import PaymentStatus
from support import factories
from support.apps import in_process

CUSTOMER = "254712345678"
SCRIPT = "<script>alert('x')</script>"


async def make_invoice(sessions: SessionFactory, **values: object) -> Invoice:
    async with sessions() as session, session.begin():
        owner = await factories.merchant(
            session, business_name=values.pop("business_name", "Wanjiku Designs")
        )
        return await factories.invoice(session, merchant=owner, **values)


async def add_payment(sessions: SessionFactory, invoice: Invoice, **values: object) -> Payment:
    async with sessions() as session, session.begin():
        return await factories.payment(session, invoice=invoice, **values)


def html(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("text/html")
    return response.text


def assert_private_page_headers(response: httpx.Response) -> None:
    headers = response.headers
    assert headers["x-robots-tag"] == "noindex, nofollow"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-store"
    policy = headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy


HTML = {"Accept": "text/html,application/xhtml+xml"}


async def test_the_page_shows_the_invoice_phone_first(
    settings: Settings, sessions: SessionFactory
) -> None:
    invoice = await make_invoice(
        sessions,
        customer_name="Jane Wanjiru",
        amount_cents=150_000,
        vat_cents=20_689,
        description="Logo design",
    )
    async with in_process(settings) as http:
        response = await http.get(f"/i/{invoice.public_token}", headers=HTML)
    assert response.status_code == 200
    assert_private_page_headers(response)
    page = html(response)
    for shown in (
        "Wanjiku Designs",
        invoice.number,
        "Jane Wanjiru",
        "Logo design",
        "KSh 1,500",
        "KSh 206.89",
        "Unpaid",
        'name="viewport"',
        'content="noindex, nofollow"',
        f"/i/{invoice.public_token}.pdf",
    ):
        assert shown in page, shown
    assert "2547•••••678" in page
    assert CUSTOMER not in page and "0712345678" not in page
    # No inline script: the page's code comes from a file the policy allows.
    assert re.findall(r"<script[^>]*>", page) == ['<script src="/static/pay.js" defer>']
    assert "style=" not in page


async def test_the_vat_rate_shown_is_the_one_the_invoice_was_issued_at(
    settings: Settings, sessions: SessionFactory
) -> None:
    """A tax document: VAT_PERCENT changed to 14 since, the invoice still says 16 %."""
    invoice = await make_invoice(sessions, amount_cents=150_000, vat_cents=20_689, vat_percent=16)
    before = await make_invoice(sessions, amount_cents=150_000, vat_cents=20_689)
    now_14 = settings.model_copy(update={"vat_percent": 14})
    async with in_process(now_14) as http:
        page = html(await http.get(f"/i/{invoice.public_token}", headers=HTML))
        pdf = await http.get(f"/i/{invoice.public_token}.pdf")
        older = html(await http.get(f"/i/{before.public_token}", headers=HTML))
    text = " ".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(pdf.content)).pages)
    assert "Includes VAT (16%)" in page and "(14%)" not in page
    assert "(16%)" in " ".join(text.split())
    assert "Includes VAT (14%)" in older  # issued before the rate was kept: today's rate


async def test_markup_a_merchant_or_customer_typed_is_shown_as_text(
    settings: Settings, sessions: SessionFactory
) -> None:
    invoice = await make_invoice(
        sessions,
        business_name=f"Shop {SCRIPT}",
        customer_name='Jane "><img src=x onerror=alert(1)>',
        description=f"Cake {SCRIPT}",
    )
    async with in_process(settings) as http:
        page = html(await http.get(f"/i/{invoice.public_token}", headers=HTML))
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "Cake &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
    assert "Shop &lt;script&gt;" in page
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in page


async def test_an_unknown_link_is_a_404_page(settings: Settings) -> None:
    async with in_process(settings) as http:
        unknown = await http.get("/i/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", headers=HTML)
        malformed = await http.get("/i/<script>", headers=HTML)
        poll = await http.get("/i/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/status")
    for response in (unknown, malformed):
        assert response.status_code == 404
        assert_private_page_headers(response)
        page = html(response)
        assert "This invoice link doesn" in page
        assert re.search(r'data-testid="error-id">e[0-9a-f]{12}<', page)
        assert "Traceback" not in page
    # The poller asks for JSON and gets the DESIGN §3 shape.
    assert poll.status_code == 404
    assert poll.json()["error"]["code"] == "invoice_link_not_found"


async def test_other_unknown_addresses_get_a_page_or_json_by_what_was_asked(
    settings: Settings,
) -> None:
    async with in_process(settings) as http:
        as_page = await http.get("/no/such/page", headers=HTML)
        as_json = await http.get("/no/such/page")
        api = await http.get("/api/v1/nothing", headers=HTML)
    assert as_page.status_code == 404 and "There is no page at this address" in html(as_page)
    assert as_json.json()["error"]["code"] == "not_found"
    assert api.json()["error"]["code"] == "not_found"


async def test_an_unhandled_error_on_a_page_shows_only_an_error_id(settings: Settings) -> None:
    from invoiceiq.main import create_app
    from support.apps import client_for

    app = create_app(settings, run_worker=False)

    @app.get("/i/{token}/boom")
    async def boom(token: str) -> None:
        raise RuntimeError(f"secret detail {token} 254712345678")

    async with app.router.lifespan_context(app), client_for(app) as http:
        response = await http.get("/i/abc/boom", headers=HTML)
    assert response.status_code == 500
    page = html(response)
    assert "Something went wrong on our side." in page
    assert re.search(r'data-testid="error-id">e[0-9a-f]{12}<', page)
    for leak in ("secret detail", "RuntimeError", "Traceback", "254712345678"):
        assert leak not in page


async def test_the_status_poll_reports_the_latest_attempt_in_plain_words(
    settings: Settings, sessions: SessionFactory
) -> None:
    invoice = await make_invoice(sessions)
    token = invoice.public_token
    async with in_process(settings) as http:
        none_yet = (await http.get(f"/i/{token}/status")).json()
        await add_payment(
            sessions,
            invoice,
            status=PaymentStatus.FAILED,
            result_code="1032",
            result_desc="Request cancelled by user",
            checkout_request_id="ws_CO_1",
        )
        failed = await http.get(f"/i/{token}/status")
    assert none_yet == {
        "status": "SENT",
        "paid_at": None,
        "paid_at_text": None,
        "receipt_number": None,
        "paid_after_cancel": False,
        "payment": None,
    }
    assert failed.headers["cache-control"] == "no-store"
    body = failed.json()
    assert body["status"] == "SENT"
    assert body["payment"]["status"] == "FAILED"
    assert body["payment"]["message"] == (
        "The payment did not go through: you cancelled the M-PESA prompt. You can try again."
    )
    assert body["payment"]["phone"] == "2547•••••678"
    assert CUSTOMER not in failed.text and "Request cancelled by user" not in failed.text


async def test_a_paid_invoice_shows_paid_with_its_receipt(
    settings: Settings, sessions: SessionFactory
) -> None:
    invoice = await make_invoice(sessions, status=InvoiceStatus.PAID, paid_at=utcnow())
    await add_payment(
        sessions,
        invoice,
        status=PaymentStatus.SUCCESS,
        receipt_number="TK4AB12CD3",
        completed_at=utcnow(),
    )
    async with in_process(settings) as http:
        page = html(await http.get(f"/i/{invoice.public_token}", headers=HTML))
        status = (await http.get(f"/i/{invoice.public_token}/status")).json()
    assert "TK4AB12CD3" in page and 'data-testid="pay-form"' not in page
    assert re.search(r'data-testid="paid"\s*>', page)  # shown, not hidden
    assert "Download the receipt (PDF)" in page
    assert status["status"] == "PAID" and status["receipt_number"] == "TK4AB12CD3"


async def test_a_cancelled_invoice_has_no_pay_form(
    settings: Settings, sessions: SessionFactory
) -> None:
    invoice = await make_invoice(sessions, status=InvoiceStatus.CANCELLED)
    async with in_process(settings) as http:
        page = html(await http.get(f"/i/{invoice.public_token}", headers=HTML))
    assert "cancelled this invoice" in page and 'data-testid="pay-form"' not in page


async def flagged_success(
    sessions: SessionFactory,
    invoice: Invoice,
    receipt: str,
    state: str,
    *,
    completed_at: datetime | None = None,
) -> None:
    """Money M-PESA confirmed for an invoice no longer payable (`state`: "already paid")."""
    await add_payment(
        sessions,
        invoice,
        status=PaymentStatus.SUCCESS,
        receipt_number=receipt,
        completed_at=completed_at or utcnow(),
        needs_review=True,
        review_reason=f"the invoice was {state} when this payment came in",
    )


@pytest.mark.parametrize(
    ("flagged_after", "paid_at_is_its_completion"),
    [(timedelta(minutes=5), False), (-timedelta(milliseconds=5), True)],
    ids=["a later double payment", "a race the earlier-stamped one lost"],
)
async def test_the_receipt_shown_is_the_payment_that_paid_the_invoice(
    settings: Settings,
    sessions: SessionFactory,
    flagged_after: timedelta,
    paid_at_is_its_completion: bool,
) -> None:
    """The paying payment is the one whose completion is the invoice's paid_at (two successes
    applied at once: the one stamped earlier may have lost and been flagged), else the first
    success (a double payment later is flagged); never the latest."""
    paying_at = utcnow()
    paid_at = paying_at if paid_at_is_its_completion else paying_at + timedelta(seconds=1)
    invoice = await make_invoice(sessions, status=InvoiceStatus.PAID, paid_at=paid_at)
    await add_payment(
        sessions,
        invoice,
        status=PaymentStatus.SUCCESS,
        receipt_number="TKPAID0001",
        completed_at=paying_at,
    )
    flagged_at = paying_at + flagged_after
    await flagged_success(sessions, invoice, "TKFLAG0002", "already paid", completed_at=flagged_at)
    async with in_process(settings) as http:
        page = html(await http.get(f"/i/{invoice.public_token}", headers=HTML))
    assert "TKPAID0001" in page and "TKFLAG0002" not in page


async def test_money_taken_after_the_invoice_was_cancelled_is_shown_not_refused(
    settings: Settings, sessions: SessionFactory
) -> None:
    """A late success on an invoice cancelled meanwhile: the customer, sent here by their
    receipt, must not read that the invoice "can't be paid" as if nothing was taken."""
    invoice = await make_invoice(sessions, status=InvoiceStatus.CANCELLED)
    await flagged_success(sessions, invoice, "TKLATE7890", "already cancelled")
    async with in_process(settings) as http:
        page = html(await http.get(f"/i/{invoice.public_token}", headers=HTML))
        pdf = await http.get(f"/i/{invoice.public_token}.pdf")
        status = await http.get(f"/i/{invoice.public_token}/status")
    assert 'data-testid="paid-after-cancel"' in page and "TKLATE7890" in page
    assert "do not pay again" in page and "so it can't be paid" not in page
    assert 'data-testid="pay-form"' not in page
    text = "\n".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(pdf.content)).pages)
    assert "TKLATE7890, received after the invoice was cancelled" in " ".join(text.split())
    # A page left open polls its status: it must say the same, not "can't be paid".
    assert status.json()["status"] == "CANCELLED" and status.json()["paid_after_cancel"] is True
    assert status.json()["receipt_number"] == "TKLATE7890"


async def test_an_open_attempt_makes_the_page_wait_for_it(
    settings: Settings, sessions: SessionFactory
) -> None:
    invoice = await make_invoice(sessions)
    await add_payment(sessions, invoice, phone="254722000111")
    async with in_process(settings) as http:
        page = html(await http.get(f"/i/{invoice.public_token}", headers=HTML))
    assert 'data-state="waiting"' in page
    assert "Waiting for the M-PESA PIN on 2547•••••111." in page
    assert "254722000111" not in page


async def test_an_attempt_whose_push_answer_was_lost_is_not_shown_as_a_sure_prompt(
    settings: Settings, sessions: SessionFactory
) -> None:
    invoice = await make_invoice(sessions)
    pushed = utcnow() - timedelta(seconds=40)
    await add_payment(sessions, invoice, phone="254722000111", push_sent_at=pushed)
    async with in_process(settings) as http:
        status = (await http.get(f"/i/{invoice.public_token}/status")).json()
    assert status["payment"]["message"] == (
        "We could not confirm that M-PESA sent a prompt to 2547•••••111. If one came, enter "
        "your PIN there. If none came, you can try again in a few minutes, once we have "
        "checked with M-PESA."
    )


@pytest.mark.parametrize("path", ["", ".pdf", "/status"])
async def test_reading_never_starts_a_payment(
    settings: Settings, sessions: SessionFactory, path: str
) -> None:
    invoice = await make_invoice(sessions)
    async with in_process(settings) as http:
        assert (await http.get(f"/i/{invoice.public_token}{path}")).status_code == 200
        opened = await http.get(f"/i/{invoice.public_token}/pay")
        # The pay address opened in a browser: back to the page (no error page), no payment.
        assert opened.status_code == 303
        assert opened.headers["location"] == f"/i/{invoice.public_token}"
    async with sessions() as session:
        assert await session.scalar(sa.select(sa.func.count()).select_from(Payment)) == 0
