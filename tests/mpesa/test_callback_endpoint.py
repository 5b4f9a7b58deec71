"""The STK callback endpoint: what it stores, and under which key."""

from __future__ import annotations

import httpx

from invoiceiq.inbox.models import InboxEvent
from invoiceiq.main import create_app
from payments.flows import callback_body, fake_prompt
from support.app_server import rows
from support.db import make_settings

SAFARICOM = "196.201.214.200"
SOMEONE = "203.0.113.9"


async def test_a_callback_from_outside_the_allowlist_does_not_make_safaricoms_a_repeat(
    database_url: str,
) -> None:
    secret = "s" * 24
    settings = make_settings(
        database_url=database_url,
        mpesa_callback_secret=secret,
        mpesa_callback_allowlist=["196.201.214.0/24"],
    )
    app = create_app(settings, run_worker=False)
    body = callback_body(fake_prompt(), receipt="UREAL12345")
    forged = callback_body(
        {**fake_prompt(), "checkout_request_id": body["Body"]["stkCallback"]["CheckoutRequestID"]},
        receipt="UFAKE12345",
    )
    answers = []
    async with app.router.lifespan_context(app):
        for client, sent in ((SOMEONE, forged), (SAFARICOM, body), (SAFARICOM, body)):
            transport = httpx.ASGITransport(app=app, client=(client, 4000))
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
                answers.append(await http.post(f"/payments/stk/callback/{secret}", json=sent))

    assert [a.status_code for a in answers] == [200, 200, 200]
    stored = await rows(database_url, InboxEvent, InboxEvent.source == "mpesa")
    receipts = sorted(
        item["Value"]
        for event in stored
        for item in event.payload["Body"]["stkCallback"]["CallbackMetadata"]["Item"]
        if item["Name"] == "MpesaReceiptNumber"
    )
    # Safaricom's own is kept beside the other (its repeat is not).
    assert receipts == ["UFAKE12345", "UREAL12345"]
