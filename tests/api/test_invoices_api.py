"""The REST API of DESIGN §3: keys, idempotent create-and-send, list, get, cancel, remind."""

from __future__ import annotations

import asyncio
import base64
import re
import uuid
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from invoiceiq.config import Settings
from invoiceiq.db.engine import SessionFactory
from invoiceiq.db.models import ApiKey, Invoice, MessageLog, Payment
from invoiceiq.invoices.states import InvoiceStatus
from invoiceiq.merchants.states import MerchantStatus
from support import factories
from support.apps import bearer, in_process, merchant_with_key

BODY: dict[str, Any] = {
    "customer_phone": "0712 345 678",
    "customer_name": "Jane Wanjiru",
    "amount": 1500,
    "description": "Logo design",
}


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert (
        {"code", "message", "error_id"} <= set(error) <= {"code", "message", "error_id", "fields"}
    )
    return error


async def count(sessions: SessionFactory, model: Any, *where: Any) -> int:
    async with sessions() as session:
        return int(
            await session.scalar(sa.select(sa.func.count()).select_from(model).where(*where)) or 0
        )


async def test_create_sends_the_invoice_and_answers_in_whole_shillings(
    settings: Settings, sessions: SessionFactory
) -> None:
    merchant, key = await merchant_with_key(sessions, vat_enabled=True)
    async with in_process(settings) as http:
        response = await http.post("/api/v1/invoices", json=BODY, headers=bearer(key))
    assert response.status_code == 201, response.text
    body = response.json()
    assert re.fullmatch(r"INV[0-9A-Z]{7}", body["number"])
    assert body["status"] == "PENDING" and body["amount"] == 1500 and body["currency"] == "KES"
    assert body["vat_amount"] == "206.89" and body["vat_percent"] == 16
    assert body["customer_phone"] == "2547•••••678" and "254712345678" not in response.text
    assert body["customer_name"] == "Jane Wanjiru" and body["description"] == "Logo design"
    async with sessions() as session:
        invoice = await session.scalar(sa.select(Invoice))
    assert invoice is not None and invoice.merchant_id == merchant.id
    assert invoice.amount_cents == 150_000 and invoice.customer_phone == "254712345678"
    assert body["link"] == f"{settings.base_url}/i/{invoice.public_token}"
    assert body["pdf_link"] == body["link"] + ".pdf"
    # Sent like a chat invoice: the customer's message and the merchant's confirmation.
    assert await count(sessions, MessageLog, MessageLog.invoice_id == invoice.id) == 2


async def test_the_same_idempotency_key_returns_the_first_invoice(
    settings: Settings, sessions: SessionFactory
) -> None:
    _, key = await merchant_with_key(sessions)
    headers = {**bearer(key), "Idempotency-Key": "order-1001"}
    async with in_process(settings) as http:
        first = await http.post("/api/v1/invoices", json=BODY, headers=headers)
        # The same request written differently is the same request.
        same = await http.post(
            "/api/v1/invoices", json={**BODY, "customer_phone": "+254712345678"}, headers=headers
        )
        changed = await http.post(
            "/api/v1/invoices", json={**BODY, "amount": 1600}, headers=headers
        )
        other_key = await http.post(
            "/api/v1/invoices", json=BODY, headers={**bearer(key), "Idempotency-Key": "order-1002"}
        )
    assert first.status_code == 201 and same.status_code == 201
    assert same.json() == first.json()
    assert same.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    error = error_of(changed, 409)
    assert error["code"] == "idempotency_conflict"
    assert other_key.json()["number"] != first.json()["number"]
    assert await count(sessions, Invoice) == 2


async def test_idempotency_keys_belong_to_their_merchant(
    settings: Settings, sessions: SessionFactory
) -> None:
    _, first_key = await merchant_with_key(sessions)
    _, second_key = await merchant_with_key(sessions)
    async with in_process(settings) as http:
        mine = await http.post(
            "/api/v1/invoices", json=BODY, headers={**bearer(first_key), "Idempotency-Key": "k"}
        )
        theirs = await http.post(
            "/api/v1/invoices",
            json={**BODY, "amount": 99},
            headers={**bearer(second_key), "Idempotency-Key": "k"},
        )
    assert mine.status_code == theirs.status_code == 201
    assert theirs.json()["amount"] == 99


async def test_a_failed_create_keeps_no_key_and_no_invoice(
    settings: Settings, sessions: SessionFactory
) -> None:
    merchant, key = await merchant_with_key(sessions, status=MerchantStatus.SUSPENDED)
    headers = {**bearer(key), "Idempotency-Key": "retry-me"}
    async with in_process(settings) as http:
        refused = await http.post("/api/v1/invoices", json=BODY, headers=headers)
        async with sessions() as session, session.begin():
            await session.execute(
                sa.update(type(merchant))
                .where(type(merchant).id == merchant.id)
                .values(status=MerchantStatus.ACTIVE)
            )
        retried = await http.post("/api/v1/invoices", json=BODY, headers=headers)
    assert error_of(refused, 403)["code"] == "merchant_cannot_invoice"
    assert "suspended" in refused.json()["error"]["message"]
    assert retried.status_code == 201
    assert await count(sessions, Invoice) == 1


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        ({"customer_phone": "0201234567"}, "customer_phone", "landline"),
        ({"customer_phone": "hello"}, "customer_phone", "only digits"),
        ({"amount": 0}, "amount", "Must be at least 1."),
        ({"amount": "1500"}, "amount", "whole number, like 1500"),
        ({"amount": 150.5}, "amount", "whole number, like 1500"),
        ({"amount": 150_001}, "amount", "at most KSh 150,000"),
        ({"description": "  a  "}, "description", "at least 3 characters"),
        ({"description": "x" * 121}, "description", "at most 120"),
        ({"ammount": 5}, "ammount", "Not a field of this request; check its spelling."),
        ({"customer_phone": ""}, "customer_phone", "Must not be empty."),
        ({"description": None}, "description", "Must be text"),
        # PostgreSQL cannot store NUL; an escape or a bell is nothing a person types.
        ({"description": "Logo\u0000design"}, "description", "control characters"),
        ({"description": "Logo \u001b[31mdesign\u0007"}, "description", "control characters"),
        ({"customer_name": "Jane\u0000"}, "customer_name", "control characters"),
        ({"description": "Logo \u202edesign"}, "description", "text-direction"),
        # Zero-width characters are not a description anyone can read.
        ({"description": "\u200b\u200b\u200b\u200b"}, "description", "at least 3 characters"),
    ],
)
async def test_invalid_fields_are_422_in_the_error_shape(
    settings: Settings,
    sessions: SessionFactory,
    change: dict[str, Any],
    field: str,
    fragment: str,
) -> None:
    _, key = await merchant_with_key(sessions)
    async with in_process(settings) as http:
        response = await http.post("/api/v1/invoices", json={**BODY, **change}, headers=bearer(key))
    error = error_of(response, 422)
    assert error["code"] == "validation_error"
    assert fragment in error["fields"][field], error
    assert await count(sessions, Invoice) == 0


async def test_a_body_that_is_not_json_says_so(
    settings: Settings, sessions: SessionFactory
) -> None:
    _, key = await merchant_with_key(sessions)
    headers = {**bearer(key), "Content-Type": "application/json"}
    async with in_process(settings) as http:
        response = await http.post("/api/v1/invoices", content=b"{not json", headers=headers)
    error = error_of(response, 422)
    assert error["fields"] == {"body": "The request body is not valid JSON."}
    assert await count(sessions, Invoice) == 0


async def test_text_is_tidied_before_its_length_is_checked(
    settings: Settings, sessions: SessionFactory
) -> None:
    _, key = await merchant_with_key(sessions)
    padded = {"description": "  " + "x" * 120 + "  ", "customer_name": "  Jane \n Wanjiru "}
    async with in_process(settings) as http:
        response = await http.post("/api/v1/invoices", json={**BODY, **padded}, headers=bearer(key))
    assert response.status_code == 201, response.text
    assert response.json()["description"] == "x" * 120
    assert response.json()["customer_name"] == "Jane Wanjiru"


async def test_without_a_valid_key_nothing_is_answered(
    settings: Settings, sessions: SessionFactory
) -> None:
    merchant, key = await merchant_with_key(sessions)
    async with sessions() as session, session.begin():
        revoked = await factories.invoice(session, merchant=merchant)
        await session.execute(sa.update(ApiKey).values(revoked_at=sa.func.now()))
    async with in_process(settings) as http:
        answers = [
            await http.get("/api/v1/invoices"),
            await http.get("/api/v1/invoices", headers={"Authorization": "Bearer iq_wrong"}),
            await http.get("/api/v1/invoices", headers={"Authorization": f"Basic {key}"}),
            await http.get(f"/api/v1/invoices/{revoked.number}", headers=bearer(key)),
            await http.post("/api/v1/invoices", json=BODY, headers=bearer(key)),
        ]
    for response in answers:
        assert error_of(response, 401)["code"] == "invalid_api_key"
        assert response.headers["www-authenticate"] == "Bearer"
    assert await count(sessions, Invoice) == 1


async def test_keys_are_stored_hashed(sessions: SessionFactory) -> None:
    _, key = await merchant_with_key(sessions)
    async with sessions() as session:
        [stored] = list(await session.scalars(sa.select(ApiKey)))
    assert key.startswith("iq_") and len(key) >= 40
    assert key not in (stored.key_hash, stored.prefix) and key.startswith(stored.prefix)
    assert len(stored.key_hash) == 64


async def test_a_number_typed_with_look_alike_letters_is_found(
    settings: Settings, sessions: SessionFactory
) -> None:
    """As in chat: no invoice number has O, I or L, so they are the 0 and 1 they look like."""
    owner, key = await merchant_with_key(sessions)
    async with sessions() as session, session.begin():
        invoice = await factories.invoice(session, merchant=owner, number="INV0C4F16K")
    async with in_process(settings) as http:
        found = await http.get("/api/v1/invoices/invoc4fi6k", headers=bearer(key))
        cancelled = await http.post("/api/v1/invoices/INVOC4FL6K/cancel", headers=bearer(key))
    assert found.status_code == 200 and found.json()["number"] == invoice.number
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"


async def test_another_merchants_invoice_is_not_found(
    settings: Settings, sessions: SessionFactory
) -> None:
    owner, owner_key = await merchant_with_key(sessions)
    _, stranger_key = await merchant_with_key(sessions)
    async with sessions() as session, session.begin():
        invoice = await factories.invoice(session, merchant=owner)
    number = invoice.number
    async with in_process(
        settings,
    ) as http:
        mine = await http.get(f"/api/v1/invoices/{number}", headers=bearer(owner_key))
        answers = [
            await http.get(f"/api/v1/invoices/{number}", headers=bearer(stranger_key)),
            await http.post(f"/api/v1/invoices/{number}/cancel", headers=bearer(stranger_key)),
            await http.post(f"/api/v1/invoices/{number}/remind", headers=bearer(stranger_key)),
            await http.get("/api/v1/invoices/INV0000000", headers=bearer(stranger_key)),
        ]
        theirs_listed = await http.get("/api/v1/invoices", headers=bearer(stranger_key))
    assert mine.status_code == 200 and mine.json()["number"] == number
    messages = set()
    for response in answers:
        error = error_of(response, 404)
        assert error["code"] == "invoice_not_found"
        messages.add(error["message"].replace(number, "N").replace("INV0000000", "N"))
    assert messages == {"No invoice N."}  # the same words whether it exists or not
    assert theirs_listed.json() == {"items": [], "next_cursor": None}
    async with sessions() as session:
        assert (await session.get(Invoice, invoice.id)).status is InvoiceStatus.SENT  # type: ignore[union-attr]


async def test_the_vat_rate_read_is_the_one_the_invoice_was_issued_at(
    settings: Settings, sessions: SessionFactory
) -> None:
    """VAT_PERCENT is 16 now; an invoice issued at 14 % reads 14, one without VAT reads null."""
    merchant, key = await merchant_with_key(sessions)
    async with sessions() as session, session.begin():
        older = await factories.invoice(
            session, merchant=merchant, amount_cents=114_000, vat_cents=14_000, vat_percent=14
        )
        no_vat = await factories.invoice(session, merchant=merchant, vat_cents=0)
    async with in_process(settings) as http:
        read_older = await http.get(f"/api/v1/invoices/{older.number}", headers=bearer(key))
        read_no_vat = await http.get(f"/api/v1/invoices/{no_vat.number}", headers=bearer(key))
    assert settings.vat_percent == 16
    assert read_older.json()["vat_amount"] == "140.00" and read_older.json()["vat_percent"] == 14
    assert read_no_vat.json()["vat_amount"] == "0.00" and read_no_vat.json()["vat_percent"] is None


async def test_list_is_paginated_newest_first_with_a_status_filter(
    settings: Settings, sessions: SessionFactory
) -> None:
    merchant, key = await merchant_with_key(sessions)
    other, _ = await merchant_with_key(sessions)
    async with sessions() as session, session.begin():
        numbers = []
        for n in range(7):
            status = InvoiceStatus.PAID if n % 3 == 0 else InvoiceStatus.SENT
            invoice = await factories.invoice(session, merchant=merchant, status=status)
            numbers.append((invoice.number, status))
        await factories.invoice(session, merchant=other)
    newest_first = [number for number, _ in reversed(numbers)]
    async with in_process(settings) as http:
        seen: list[str] = []
        cursor = None
        for _ in range(5):
            params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            page = (await http.get("/api/v1/invoices", params=params, headers=bearer(key))).json()
            seen += [item["number"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        paid = await http.get("/api/v1/invoices", params={"status": "PAID"}, headers=bearer(key))
        bad_cursor = await http.get(
            "/api/v1/invoices", params={"cursor": "not-a-cursor"}, headers=bearer(key)
        )
        # Well formed, but a time that UTC cannot hold (9999-12-31 in New York is year 10000).
        forged = f"9999-12-31T23:59:59-05:00|{uuid.uuid4().hex}".encode()
        edge_of_time = await http.get(
            "/api/v1/invoices",
            params={"cursor": base64.urlsafe_b64encode(forged).decode().rstrip("=")},
            headers=bearer(key),
        )
        blank = await http.get(
            "/api/v1/invoices", params={"status": "", "cursor": ""}, headers=bearer(key)
        )
        bad_status = await http.get(
            "/api/v1/invoices", params={"status": "LOST"}, headers=bearer(key)
        )
    assert seen == newest_first
    assert [item["number"] for item in paid.json()["items"]] == [
        number for number, status in reversed(numbers) if status is InvoiceStatus.PAID
    ]
    assert "cursor" in error_of(bad_cursor, 422)["fields"]
    assert "cursor" in error_of(edge_of_time, 422)["fields"]
    assert blank.status_code == 200 and len(blank.json()["items"]) == min(len(numbers), 20)
    assert "status" in error_of(bad_status, 422)["fields"]


async def test_cancel_and_remind(settings: Settings, sessions: SessionFactory) -> None:
    merchant, key = await merchant_with_key(sessions)
    async with sessions() as session, session.begin():
        unpaid = await factories.invoice(session, merchant=merchant)
        paid = await factories.invoice(session, merchant=merchant, status=InvoiceStatus.PAID)
        paying = await factories.invoice(session, merchant=merchant, customer_phone="254711000001")
        await factories.payment(session, invoice=paying)
    async with in_process(settings) as http:
        reminded_too_soon = await http.post(
            f"/api/v1/invoices/{unpaid.number}/remind", headers=bearer(key)
        )
        cancelled = await http.post(f"/api/v1/invoices/{unpaid.number}/cancel", headers=bearer(key))
        again = await http.post(f"/api/v1/invoices/{unpaid.number}/cancel", headers=bearer(key))
        not_paid_one = await http.post(
            f"/api/v1/invoices/{paid.number}/cancel", headers=bearer(key)
        )
        while_paying = await http.post(
            f"/api/v1/invoices/{paying.number.lower()}/cancel", headers=bearer(key)
        )
    assert error_of(reminded_too_soon, 409)["code"] == "reminder_refused"
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
    assert cancelled.json()["cancelled_at"] is not None
    assert "already cancelled" in error_of(again, 409)["message"]
    assert "already paid" in error_of(not_paid_one, 409)["message"]
    assert "paying" in error_of(while_paying, 409)["message"]
    assert await count(sessions, Payment) == 1


async def test_remind_sends_the_invoice_again(database_url: str, sessions: SessionFactory) -> None:
    from support.db import make_settings

    merchant, key = await merchant_with_key(sessions)
    async with sessions() as session, session.begin():
        invoice = await factories.invoice(session, merchant=merchant)
    settings = make_settings(database_url=database_url, remind_min_interval=0)
    async with in_process(settings) as http:
        reminded = await http.post(f"/api/v1/invoices/{invoice.number}/remind", headers=bearer(key))
    assert reminded.status_code == 200 and reminded.json()["number"] == invoice.number
    assert await count(sessions, MessageLog, MessageLog.kind == "reminder") == 1


async def test_a_suspended_merchants_reminder_is_refused_as_documented(
    settings: Settings, sessions: SessionFactory
) -> None:
    merchant, key = await merchant_with_key(sessions, status=MerchantStatus.SUSPENDED)
    async with sessions() as session, session.begin():
        invoice = await factories.invoice(session, merchant=merchant, status=InvoiceStatus.SENT)
    async with in_process(settings) as http:
        refused = await http.post(f"/api/v1/invoices/{invoice.number}/remind", headers=bearer(key))
        spec = (await http.get("/openapi.json")).json()
    assert error_of(refused, 403)["code"] == "merchant_cannot_invoice"
    assert "403" in spec["paths"]["/api/v1/invoices/{number}/remind"]["post"]["responses"]
    assert await count(sessions, MessageLog, MessageLog.kind == "reminder") == 0


async def test_openapi_documents_the_api_with_examples(settings: Settings) -> None:
    async with in_process(settings) as http:
        spec = (await http.get("/openapi.json")).json()
        docs = await http.get("/docs")
        script = await http.get("/docs/static/swagger-ui-bundle.js")
    assert set(spec["paths"]) == {
        "/api/v1/invoices",
        "/api/v1/invoices/{number}",
        "/api/v1/invoices/{number}/cancel",
        "/api/v1/invoices/{number}/remind",
    }
    schemas = spec["components"]["schemas"]
    assert schemas["InvoiceCreate"]["examples"][0]["amount"] == 1500
    assert schemas["InvoiceRead"]["examples"][0]["customer_phone"] == "2547•••••678"
    create = spec["paths"]["/api/v1/invoices"]["post"]
    assert {"201", "401", "403", "409", "413", "422"} <= set(create["responses"])
    assert "Idempotent-Replayed" in create["responses"]["201"]["headers"]
    # Each route's 409 says when that route answers it.
    paths = spec["paths"]
    assert "invoice_refused" in create["responses"]["409"]["description"]
    cancel = paths["/api/v1/invoices/{number}/cancel"]["post"]["responses"]["409"]
    assert "paying it right now" in cancel["description"]
    assert "Idempotency-Key" not in cancel["description"]
    remind = paths["/api/v1/invoices/{number}/remind"]["post"]["responses"]["409"]
    assert "REMIND_MIN_INTERVAL" in remind["description"]
    assert create["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"
    }
    assert any(p["name"] == "Idempotency-Key" for p in create["parameters"])
    assert spec["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    # Swagger UI from files we serve: nothing from a CDN on an offline machine.
    assert docs.status_code == 200 and "/docs/static/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower()
    assert script.status_code == 200 and "SwaggerUIBundle" in script.text


async def test_simultaneous_repeats_of_one_key_make_one_invoice(
    settings: Settings, sessions: SessionFactory
) -> None:
    _, key = await merchant_with_key(sessions)
    headers = {**bearer(key), "Idempotency-Key": "double-click"}
    async with in_process(settings) as http:
        answers = await asyncio.gather(
            *(http.post("/api/v1/invoices", json=BODY, headers=headers) for _ in range(5))
        )
    assert [answer.status_code for answer in answers] == [201] * 5
    assert len({answer.json()["number"] for answer in answers}) == 1
    assert sum("idempotent-replayed" in answer.headers for answer in answers) == 4
    assert await count(sessions, Invoice) == 1
