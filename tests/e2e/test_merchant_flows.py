"""The merchant's side over WhatsApp, end to end over real HTTP with the simulator."""

from __future__ import annotations

from support.app_server import running_app

MERCHANT = "254700000001"
CUSTOMER = "254712345678"


async def test_one_line_invoice_reaches_customer_and_merchant(database_url: str) -> None:
    async with running_app(database_url) as app:
        merchant, customer = app.phone(MERCHANT), app.phone(CUSTOMER)
        await merchant.say("name Wanjiku Designs")
        reply = await merchant.next_reply()
        assert "Wanjiku Designs" in reply["text"]
        await merchant.say("invoice 0712345678 1500 Logo design")
        messages = await customer.wait_for_count(1)
        print(messages)
        confirmation = await merchant.wait_for_count(2)
        print(confirmation)
