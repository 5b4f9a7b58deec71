"""CSRF protection of the pay form: a signed double-submit token.

Choice: the page sets a random cookie (`HttpOnly`, `SameSite=Lax`, path /i/) and puts
`<issued at>.<HMAC(secret, cookie | public token | issued at)>` in the form. A POST is accepted
only with both, matching, and younger than MAX_AGE. A page on another site can make a browser
submit the form, but it can neither read our page (to copy the field) nor set our cookie, and a
Lax SameSite cookie is not even sent with a cross-site POST (it is with a link followed from
WhatsApp, so opening a second invoice keeps the first one's form valid). The HMAC binds the
field to this browser's cookie and this invoice, so a field copied from another browser or
invoice fails.

The secret is derived from the WhatsApp webhook secret and the M-PESA callback secret, which
every deployment already has and production refuses to run with as placeholders: no new setting,
and the same in every web process. Rotating either secret only makes open pages reload.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

from invoiceiq.config import Settings

COOKIE = "iq_csrf"
FIELD = "csrf"
# A customer may leave the page open a long while before paying; after that, a reload.
MAX_AGE = 12 * 3600
_COOKIE_VALUE = re.compile(r"^[A-Za-z0-9_-]{22,64}$")


def secret_for(settings: Settings) -> bytes:
    material = b"\0".join(
        (
            settings.whatsapp_webhook_secret.get_secret_value().encode(),
            settings.mpesa_callback_secret.get_secret_value().encode(),
        )
    )
    return hmac.new(b"invoiceiq/web-csrf/v1", material, hashlib.sha256).digest()


def valid_cookie(value: str | None) -> bool:
    return value is not None and _COOKIE_VALUE.match(value) is not None


def new_cookie() -> str:
    return secrets.token_urlsafe(16)


def _mac(secret: bytes, cookie: str, token: str, issued: int) -> str:
    message = f"{cookie}|{token}|{issued}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def issue(secret: bytes, *, cookie: str, token: str, now: float | None = None) -> str:
    issued = int(time.time() if now is None else now)
    return f"{issued}.{_mac(secret, cookie, token, issued)}"


def verify(
    secret: bytes, *, cookie: str | None, token: str, field: str | None, now: float | None = None
) -> bool:
    if not valid_cookie(cookie) or not field:
        return False
    assert cookie is not None
    issued_text, _, mac = field.partition(".")
    if not issued_text.isdecimal() or len(issued_text) > 12:
        return False
    issued = int(issued_text)
    age = (time.time() if now is None else now) - issued
    if not -60 <= age <= MAX_AGE:  # a minute of clock skew between web processes
        return False
    return hmac.compare_digest(mac, _mac(secret, cookie, token, issued))
