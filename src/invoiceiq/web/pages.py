"""The invoice's public page (DESIGN §3, §7): GET /i/{token}, its PDF, paying, and the poll."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from invoiceiq.config import Settings
from invoiceiq.db.uow import unit_of_work
from invoiceiq.deps import SessionDep, SettingsDep, get_session_factory
from invoiceiq.invoices.messages import invoice_link, vat_rate
from invoiceiq.invoices.states import InvoiceStatus
from invoiceiq.kit.clock import nairobi
from invoiceiq.kit.money import format_kes
from invoiceiq.kit.phone import mask_msisdn
from invoiceiq.payments.states import PaymentStatus
from invoiceiq.web import csrf
from invoiceiq.web import service as web_service
from invoiceiq.web.addresses import client_address, limit_subject
from invoiceiq.web.errors import FormExpired, LinkNotFound
from invoiceiq.web.pdf import PdfContent, build_pdf
from invoiceiq.web.render import PRIVATE_HEADERS, STATIC_DIR, STATIC_URL, render
from invoiceiq.web.service import InvoicePage

router = APIRouter(include_in_schema=False)
# The shape of invoices.numbering.new_public_token(); anything else is not a link of ours.
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
STATUS_LABELS = {
    InvoiceStatus.PENDING: ("Unpaid", "unpaid"),
    InvoiceStatus.SENT: ("Unpaid", "unpaid"),
    InvoiceStatus.PAID: ("Paid", "paid"),
    InvoiceStatus.CANCELLED: ("Cancelled", "cancelled"),
}


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="static")


async def _load(session: SessionDep, token: str) -> InvoicePage:
    if not _TOKEN.match(token):
        raise LinkNotFound()
    return await web_service.load(session, token)


def _stamp(page: InvoicePage) -> tuple[str, str | None]:
    created = nairobi(page.invoice.created_at).strftime("%d %b %Y")
    return created, web_service.paid_stamp(page.invoice)


def _vat_line(page: InvoicePage, settings: Settings) -> str | None:
    if not page.invoice.vat_cents:
        return None
    rate = vat_rate(page.invoice, settings.vat_percent)
    return f"{format_kes(page.invoice.vat_cents)} included ({rate}%)"


# The PDF is matched before the page: "{token}" alone would also match "abc.pdf".
@router.get("/i/{token}.pdf")
async def invoice_pdf(token: str, session: SessionDep, settings: SettingsDep) -> Response:
    page = await _load(session, token)
    invoice = page.invoice
    created, paid_at = _stamp(page)
    who = mask_msisdn(invoice.customer_phone)
    content = PdfContent(
        business_name=page.business_name,
        number=invoice.number,
        date=created,
        status_label=STATUS_LABELS[invoice.status][0],
        customer=f"{invoice.customer_name} ({who})" if invoice.customer_name else who,
        description=invoice.description,
        amount=format_kes(invoice.amount_cents),
        vat_line=_vat_line(page, settings),
        paid=invoice.status is InvoiceStatus.PAID,
        paid_at=paid_at,
        receipt=page.receipt,
        paid_after_cancel=page.paid_after_cancel,
        link=invoice_link(settings.base_url, invoice) if page.payable else None,
    )
    data = await asyncio.to_thread(build_pdf, content)
    kind = "receipt" if content.paid else "invoice"
    return Response(
        data,
        media_type="application/pdf",
        headers={
            **PRIVATE_HEADERS,
            "Content-Disposition": f'inline; filename="{kind}-{invoice.number}.pdf"',
        },
    )


@router.get("/i/{token}/status")
async def invoice_status(token: str, session: SessionDep) -> JSONResponse:
    page = await _load(session, token)
    return JSONResponse(web_service.status_payload(page), headers=PRIVATE_HEADERS)


@router.get("/i/{token}")
async def invoice_page(
    request: Request, token: str, session: SessionDep, settings: SettingsDep
) -> Response:
    page = await _load(session, token)
    cookie = request.cookies.get(csrf.COOKIE)
    if cookie is None or not csrf.valid_cookie(cookie):
        cookie = csrf.new_cookie()
    field = csrf.issue(csrf.secret_for(settings), cookie=cookie, token=token)
    response = render("invoice.html", _page_context(page, settings, token=token, csrf=field))
    # Set again on every view, so it lasts as long as the newest form it signs. Lax, not
    # Strict: a link tapped in WhatsApp is a cross-site navigation, and without the cookie this
    # view would replace it and break the forms of pages already open. Lax still keeps it off
    # cross-site POSTs.
    response.set_cookie(
        csrf.COOKIE,
        cookie,
        max_age=csrf.MAX_AGE,
        path="/i/",
        secure=settings.base_url.startswith("https://"),
        httponly=True,
        samesite="lax",
    )
    return response


def _page_context(
    page: InvoicePage, settings: Settings, *, token: str, csrf: str
) -> dict[str, Any]:
    invoice = page.invoice
    created, paid_at = _stamp(page)
    label, css = STATUS_LABELS[invoice.status]
    latest = web_service.payment_state(page.latest) if page.payable else None
    waiting = latest is not None and latest["status"] == PaymentStatus.INITIATED.value
    failed = latest is not None and latest["status"] == PaymentStatus.FAILED.value
    return {
        "business_name": page.business_name,
        "number": invoice.number,
        "date": created,
        "customer_name": invoice.customer_name,
        "description": invoice.description,
        "amount": format_kes(invoice.amount_cents),
        "vat": format_kes(invoice.vat_cents) if invoice.vat_cents else None,
        "vat_percent": vat_rate(invoice, settings.vat_percent),
        "status_label": label,
        "status_class": css,
        "paid": invoice.status is InvoiceStatus.PAID,
        "paid_at": paid_at,
        "receipt": page.receipt,
        "cancelled": invoice.status is InvoiceStatus.CANCELLED,
        "paid_after_cancel": page.paid_after_cancel,
        "payable": page.payable,
        "masked_phone": mask_msisdn(invoice.customer_phone),
        "csrf": csrf,
        "pay_url": f"/i/{token}/pay",
        "status_url": f"/i/{token}/status",
        "pdf_url": f"/i/{token}.pdf",
        "state": "waiting" if waiting else "idle",
        "notice": latest["message"] if (waiting or failed) and latest else None,
        "notice_kind": "error" if failed else None,
    }


@router.get("/i/{token}/pay")
async def pay_address_opened(token: str) -> RedirectResponse:
    """The pay form's address opened in a browser (a refreshed result page, a copied link):
    the invoice's page, where paying starts."""
    return RedirectResponse(f"/i/{quote(token, safe='')}", status_code=303)


@router.post("/i/{token}/pay")
async def pay(
    request: Request,
    token: str,
    session: SessionDep,
    settings: SettingsDep,
    csrf_field: Annotated[str | None, Form(alias=csrf.FIELD, max_length=200)] = None,
    phone: Annotated[str | None, Form(max_length=64)] = None,
) -> Response:
    """Start an M-PESA prompt: JSON for the page's script, else a redirect back to the page."""
    back = f"/i/{token}"
    secret = csrf.secret_for(settings)
    cookie = request.cookies.get(csrf.COOKIE)
    if not csrf.verify(secret, cookie=cookie, token=token, field=csrf_field):
        raise FormExpired(back_url=back)
    # Its own transaction, before the request's own touches the database: the count must
    # stay even when this request is refused, and SQLite has one writer at a time.
    async with unit_of_work(get_session_factory(request)) as counting:
        await web_service.count_client_request(
            counting,
            secret=secret,
            address=limit_subject(client_address(request, settings.trusted_proxies)),
        )
    page = await _load(session, token)
    payer = web_service.payer_phone(page, phone, back)
    answer = await web_service.pay(session, settings, page=page, phone=payer, back_url=back)
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse(
            answer.as_json(page.invoice), status_code=answer.status_code, headers=PRIVATE_HEADERS
        )
    # Without script: back to the page (GET), which shows the attempt and its progress.
    return RedirectResponse(back, status_code=303)
