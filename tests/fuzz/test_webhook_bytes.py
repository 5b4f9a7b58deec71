"""Raw bytes POSTed to both webhooks never make a 500.

The whole app runs in-process (its lifespan too, without a worker) behind httpx's ASGI
transport, on both databases: whatever arrives is refused with a 4xx, ignored, or stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from fuzz.strategies import bodies, examples, stk_callback, wa_envelope
from invoiceiq.main import create_app
from support.db import make_settings

WEBHOOK_SECRET = "fuzz-webhook-secret"
CALLBACK_SECRET = "fuzz-callback-secret"
FUZZ = settings(
    max_examples=examples(120),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_content_types = st.sampled_from(["application/json", "text/plain", "", "application/json; x"])
# Always tried: nesting deeper than Python's JSON parser recurses, and what JSON may carry but
# PostgreSQL's JSON refuses (NUL characters, unpaired surrogates).
DEEP = b"[" * 5000 + b"]" * 5000
NUL_CALLBACK = (
    b'{"Body": {"stkCallback": {"MerchantRequestID": "m", "CheckoutRequestID": "ws_CO_1",'
    b' "ResultCode": 1032, "ResultDesc": "a\\u0000b"}}}'
)
SURROGATE_CALLBACK = NUL_CALLBACK.replace(b"\\u0000", b"\\ud800")
# Python reads NaN, Infinity and 1e400 (as infinity); PostgreSQL's jsonb refuses them.
NAN_CALLBACK = NUL_CALLBACK.replace(b'"a\\u0000b"', b'"x", "Balance": NaN')
NUL_STATUS = (
    b'{"entry": [{"changes": [{"value": {"statuses": [{"id": "wamid.\\u0000", "status":'
    b' "read", "timestamp": "1700000000"}]}}]}]}'
)


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        make_settings(
            database_url=database_url,
            whatsapp_webhook_secret=WEBHOOK_SECRET,
            mpesa_callback_secret=CALLBACK_SECRET,
        ),
        run_worker=False,
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://fuzz") as http:
            yield http


@FUZZ
@given(body=bodies(wa_envelope), content_type=_content_types)
@example(body=DEEP, content_type="application/json")
@example(body=NUL_STATUS, content_type="application/json")
@example(body=NUL_STATUS.replace(b'"wamid.\\u0000"', b"NaN"), content_type="application/json")
@example(body=NUL_STATUS.replace(b'"1700000000"', b"Infinity"), content_type="application/json")
async def test_the_whatsapp_webhook_never_answers_500(
    client: httpx.AsyncClient, body: bytes, content_type: str
) -> None:
    headers = {"X-Webhook-Secret": WEBHOOK_SECRET, "Content-Type": content_type}
    response = await client.post("/whatsapp/webhook", content=body, headers=headers)
    event(f"{response.status_code} {response.text[:30]}")
    assert response.status_code < 500, response.text


@FUZZ
@given(body=bodies(stk_callback), content_type=_content_types)
@example(body=DEEP, content_type="application/json")
@example(body=NUL_CALLBACK, content_type="application/json")
@example(body=SURROGATE_CALLBACK, content_type="application/json")
@example(body=NAN_CALLBACK, content_type="application/json")
@example(body=NAN_CALLBACK.replace(b"NaN", b"1e400"), content_type="application/json")
async def test_the_stk_callback_never_answers_500(
    client: httpx.AsyncClient, body: bytes, content_type: str
) -> None:
    headers = {"Content-Type": content_type}
    path = f"/payments/stk/callback/{CALLBACK_SECRET}"
    response = await client.post(path, content=body, headers=headers)
    event(f"{response.status_code} {response.text[:30]}")
    assert response.status_code < 500, response.text
