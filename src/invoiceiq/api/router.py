"""/api/v1 (DESIGN §3) and the OpenAPI docs at /docs, served without any CDN."""

from __future__ import annotations

from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, Path, Query
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BeforeValidator

from invoiceiq.api import service as api_service
from invoiceiq.api.auth import CurrentMerchant
from invoiceiq.api.schemas import ErrorResponse, InvoiceCreate, InvoicePage, InvoiceRead
from invoiceiq.deps import SessionDep, SettingsDep
from invoiceiq.invoices.states import InvoiceStatus
from invoiceiq.ops.middleware import MAX_BODY_BYTES


def _errors(*statuses: int, conflict: str = "") -> dict[int | str, dict[str, Any]]:
    """The error answers of a route; `conflict` says when this route answers 409."""
    described = {
        400: "The request body could not be read as text (not UTF-8).",
        401: "No valid API key.",
        403: "This merchant may not send invoices (suspended, awaiting approval, or unnamed).",
        404: "No such invoice for this merchant (another merchant's invoice is not found either).",
        409: conflict,
        413: f"The request body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB.",
        422: "Not JSON, or invalid fields; `error.fields` says what is wrong with each.",
    }
    return {
        status: {"model": ErrorResponse, "description": described[status]} for status in statuses
    }


router = APIRouter(prefix="/api/v1", tags=["invoices"], responses=_errors(401, 422))

InvoiceNumber = Annotated[
    str,
    Path(
        pattern=r"^[A-Za-z0-9]{1,20}$",
        description="The invoice number, e.g. INV7K3QX9A.",
        examples=["INV7K3QX9A"],
    ),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Repeat a create safely: within 24 hours the same key with the same body "
        "returns the first result; with a different body, 409.",
    ),
]


@router.post(
    "/invoices",
    status_code=201,
    response_model=InvoiceRead,
    responses={
        201: {
            "description": "Created, or (with `Idempotent-Replayed: true`) the invoice an "
            "earlier request with the same Idempotency-Key and body created.",
            "headers": {
                "Idempotent-Replayed": {
                    "description": "`true` when this is an earlier request's answer, replayed.",
                    "schema": {"type": "string", "enum": ["true"]},
                }
            },
        },
        **_errors(
            400,
            403,
            409,
            413,
            conflict="The customer asked not to receive invoices (they sent STOP; code "
            "`invoice_refused`), or an Idempotency-Key reused with another body (code "
            "`idempotency_conflict`).",
        ),
    },
    summary="Create an invoice and send it to the customer on WhatsApp",
)
async def create_invoice(
    body: InvoiceCreate,
    merchant: CurrentMerchant,
    session: SessionDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    result = await api_service.create_invoice(
        session, settings, merchant=merchant, body=body, idempotency_key=idempotency_key
    )
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return JSONResponse(result.body, status_code=result.status, headers=headers)


def _blank_is_none(value: Any) -> Any:
    """`?status=` as a form or a URL template leaves it: no filter, not an error."""
    return None if value == "" else value


@router.get("/invoices", summary="List invoices, newest first")
async def list_invoices(
    merchant: CurrentMerchant,
    session: SessionDep,
    settings: SettingsDep,
    status: Annotated[
        InvoiceStatus | None,
        BeforeValidator(_blank_is_none),
        Query(description="Only this status (empty: any)."),
    ] = None,
    cursor: Annotated[
        str | None, Query(max_length=200, description="`next_cursor` of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> InvoicePage:
    return await api_service.list_invoices(
        session, settings, merchant=merchant, status=status, cursor=cursor, limit=limit
    )


@router.get("/invoices/{number}", responses=_errors(404), summary="Get one invoice")
async def get_invoice(
    number: InvoiceNumber, merchant: CurrentMerchant, session: SessionDep, settings: SettingsDep
) -> InvoiceRead:
    invoice = await api_service.get_invoice(session, merchant, number)
    return await api_service.invoice_read(session, settings, invoice)


@router.post(
    "/invoices/{number}/cancel",
    responses=_errors(
        404,
        409,
        conflict="Already paid or cancelled, or the customer is paying it right now.",
    ),
    summary="Cancel an unpaid invoice (refused while the customer is paying)",
)
async def cancel_invoice(
    number: InvoiceNumber, merchant: CurrentMerchant, session: SessionDep, settings: SettingsDep
) -> InvoiceRead:
    invoice = await api_service.cancel_invoice(session, merchant, number)
    return await api_service.invoice_read(session, settings, invoice)


@router.post(
    "/invoices/{number}/remind",
    responses=_errors(
        403,
        404,
        409,
        conflict="Paid or cancelled, reminded less than REMIND_MIN_INTERVAL ago, the "
        "customer asked not to receive reminders (they sent STOP), or a payment of it is in "
        "progress or being checked (the customer may have paid).",
    ),
    summary="Send the invoice to the customer again (at most once per REMIND_MIN_INTERVAL)",
)
async def remind_invoice(
    number: InvoiceNumber, merchant: CurrentMerchant, session: SessionDep, settings: SettingsDep
) -> InvoiceRead:
    invoice = await api_service.remind_invoice(session, settings, merchant, number)
    return await api_service.invoice_read(session, settings, invoice)


# The Swagger UI files ship in the fastapi-offline wheel: the docs work on an offline machine.
DOCS_STATIC = "/docs/static"


def install(app: FastAPI) -> None:
    """Add /api/v1 and /docs to `app` (built with docs_url=None, redoc_url=None)."""
    app.include_router(router)
    assets = resources.files("fastapi_offline") / "static"
    app.mount(DOCS_STATIC, StaticFiles(directory=str(assets)), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_STATIC}/favicon.png",
        )
