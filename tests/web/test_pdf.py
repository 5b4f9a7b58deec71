"""The invoice PDF (a receipt once paid): a real PDF whose text is what the merchant typed."""

from __future__ import annotations

import io

import httpx
import pypdf

from invoiceiq.config import Settings
from invoiceiq.db.engine import SessionFactory
from invoiceiq.db.models import Invoice
from invoiceiq.invoices.states import InvoiceStatus
from invoiceiq.kit.clock import utcnow
from invoiceiq.payments.states import PaymentStatus
from invoiceiq.web.pdf import PdfContent, build_pdf
from support import factories
from support.apps import in_process

NAME = "Café Ñandú & Wanjirũ Ltd — Σοφία"


async def make_invoice(sessions: SessionFactory, **values: object) -> Invoice:
    async with sessions() as session, session.begin():
        owner = await factories.merchant(session, business_name=values.pop("business_name", NAME))
        return await factories.invoice(session, merchant=owner, **values)


def text_of(response: httpx.Response) -> str:
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.content.startswith(b"%PDF-")
    reader = pypdf.PdfReader(io.BytesIO(response.content))
    return "\n".join(page.extract_text() for page in reader.pages)


async def test_the_pdf_holds_the_invoice_as_typed(
    settings: Settings, sessions: SessionFactory
) -> None:
    invoice = await make_invoice(
        sessions,
        customer_name="Jane Wanjiru",
        amount_cents=150_000,
        vat_cents=20_689,
        description="Cake <script>alert('x')</script>",
    )
    async with in_process(settings) as http:
        response = await http.get(f"/i/{invoice.public_token}.pdf")
    text = text_of(response)
    for shown in (
        invoice.number,
        NAME,
        "INVOICE",
        "KSh 1,500",
        "KSh 206.89",
        "Jane Wanjiru (2547•••••678)",
        # Text, not markup: the characters as typed.
        "Cake <script>alert('x')</script>",
        "Unpaid",
    ):
        assert shown in text, shown
    assert "254712345678" not in text
    headers = response.headers
    assert headers["x-robots-tag"] == "noindex, nofollow"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-store"
    assert headers["content-disposition"] == f'inline; filename="invoice-{invoice.number}.pdf"'


async def test_once_paid_the_pdf_is_a_receipt(settings: Settings, sessions: SessionFactory) -> None:
    invoice = await make_invoice(sessions, status=InvoiceStatus.PAID, paid_at=utcnow())
    async with sessions() as session, session.begin():
        await factories.payment(
            session,
            invoice=invoice,
            status=PaymentStatus.SUCCESS,
            receipt_number="TK4AB12CD3",
            completed_at=utcnow(),
        )
    async with in_process(settings) as http:
        text = text_of(await http.get(f"/i/{invoice.public_token}.pdf"))
    assert "RECEIPT · PAID" in text and "TK4AB12CD3" in text and invoice.number in text
    assert "Pay with M-PESA at" not in text


async def test_a_cancelled_invoice_pdf_says_so_in_its_title(
    settings: Settings, sessions: SessionFactory
) -> None:
    invoice = await make_invoice(sessions, status=InvoiceStatus.CANCELLED, cancelled_at=utcnow())
    async with in_process(settings) as http:
        text = text_of(await http.get(f"/i/{invoice.public_token}.pdf"))
    assert "INVOICE · CANCELLED" in text and "Pay with M-PESA at" not in text


async def test_an_unknown_token_has_no_pdf(settings: Settings) -> None:
    async with in_process(settings) as http:
        response = await http.get("/i/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.pdf")
    assert response.status_code == 404


def test_names_beyond_the_font_do_not_break_the_pdf() -> None:
    """A glyph DejaVu lacks (CJK, emoji) is left out; the rest of the document still renders."""
    content = PdfContent(
        business_name="茶 Shop 🍵",
        number="INV7K3QX9A",
        date="26 Nov 2026",
        status_label="Unpaid",
        customer="2547•••••678",
        description="x" * 120,
        amount="KSh 150,000",
        vat_line=None,
        paid=False,
        paid_at=None,
        receipt=None,
        link=None,
    )
    data = build_pdf(content)
    text = pypdf.PdfReader(io.BytesIO(data)).pages[0].extract_text()
    assert "INV7K3QX9A" in text and "Shop" in text and "x" * 60 in text.replace("\n", "")
