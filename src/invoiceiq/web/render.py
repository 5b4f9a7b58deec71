"""HTML for people: Jinja2 with autoescape, and the headers every public page carries.

The headers (DESIGN §7): no indexing (the URL is a secret), no Referer (it would leak the URL to
any site linked from the page), a Content-Security-Policy without inline script or style, no
framing, and no caching of a page that holds personal data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.responses import HTMLResponse

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
STATIC_URL = "/static"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)

PRIVATE_HEADERS = {
    "X-Robots-Tag": "noindex, nofollow",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
PAGE_HEADERS = {
    **PRIVATE_HEADERS,
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
}

# autoescape=True for every template: a business name or description holding markup is text.
environment = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.globals["static"] = STATIC_URL


def render(
    template: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    html = environment.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code, headers={**PAGE_HEADERS, **(headers or {})})


def error_page(
    *,
    status_code: int,
    message: str,
    error_id: str,
    back_url: str | None = None,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """A short message and the error id: never a stack trace or a provider's words."""
    titles = {
        403: "Please reload the page",
        404: "Not found",
        409: "This can't be done now",
        422: "Please check what you typed",
        429: "Please wait a moment",
    }
    title = titles.get(status_code, "Something went wrong")
    return render(
        "error.html",
        {"title": title, "message": message, "error_id": error_id, "back_url": back_url},
        status_code=status_code,
        headers=headers,
    )
