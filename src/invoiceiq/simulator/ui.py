"""The simulator's browser UI (DESIGN §8): a merchant's and a customer's phone side by side.

One server-rendered page; `static/phones.js` drives it through the control API only (it polls
each phone's inbox and the customer's open M-PESA prompts about once a second).

PIN convention of the simulated prompt: a PIN of exactly four digits other than `0000` accepts
the payment (ResultCode 0); any other PIN answers `wrong_pin` (2001); Cancel answers `cancel`
(1032); a prompt left alone times out as the simulator's config says (1037).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

if TYPE_CHECKING:
    from invoiceiq.simulator.app import Simulator

_HERE = Path(__file__).parent
STATIC_DIR = _HERE / "static"
TEMPLATES_DIR = _HERE / "templates"

DEFAULT_MERCHANT = "254700000001"
DEFAULT_CUSTOMER = "254700000002"

# The page loads only its own script and stylesheet; nothing inline, nothing from elsewhere.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

templates = Jinja2Templates(directory=TEMPLATES_DIR)


def build_ui_router(simulator: Simulator) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/", response_class=HTMLResponse)
    async def phones(request: Request) -> HTMLResponse:
        response = templates.TemplateResponse(
            request,
            "phones.html",
            {
                # Where the control API lives, as seen by the browser (the mount point).
                "base": request.scope.get("root_path", "").rstrip("/"),
                "merchant": DEFAULT_MERCHANT,
                "customer": DEFAULT_CUSTOMER,
                "shortcode": simulator.business_shortcode,
            },
        )
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["Cache-Control"] = "no-store"
        return response

    return router
