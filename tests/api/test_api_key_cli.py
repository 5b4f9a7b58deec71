"""`invoiceiq merchant api-key MSISDN`: prints a new key once; only its hash is kept."""

from __future__ import annotations

from typing import Any

import httpx
import sqlalchemy as sa
from typer.testing import CliRunner

from invoiceiq.cli import app as cli
from invoiceiq.db.engine import SessionFactory
from invoiceiq.db.models import ApiKey, Merchant
from invoiceiq.merchants.states import MerchantStatus
from support import factories
from support.apps import bearer, in_process
from support.cli import with_sessions
from support.db import make_settings


def api_key(database_url: str, *args: str) -> Any:
    runner = CliRunner()
    return runner.invoke(cli, ["merchant", "api-key", *args], env={"DATABASE_URL": database_url})


def test_a_new_key_is_printed_once_stored_hashed_and_works(database_url: str) -> None:
    async def add_merchant(sessions: SessionFactory) -> Merchant:
        async with sessions() as session, session.begin():
            return await factories.merchant(session, phone="254700000009")

    merchant = with_sessions(database_url, add_merchant)
    first = api_key(database_url, "0700 000 009")
    second = api_key(database_url, "0700000009", "--revoke-old")
    assert first.exit_code == 0, first.output
    key, new_key = first.stdout.strip(), second.stdout.strip()
    assert key.startswith("iq_") and new_key.startswith("iq_") and key != new_key
    assert "2547•••••009" in first.stderr and "will not be shown again" in first.stderr
    assert "254700000009" not in first.output

    async def stored_and_used(sessions: SessionFactory) -> tuple[list[ApiKey], list[int]]:
        async with sessions() as session:
            rows = list(await session.scalars(sa.select(ApiKey)))
        async with in_process(make_settings(database_url=database_url)) as http:
            answers: list[httpx.Response] = [
                await http.get("/api/v1/invoices", headers=bearer(k)) for k in (key, new_key)
            ]
        return rows, [answer.status_code for answer in answers]

    stored, statuses = with_sessions(database_url, stored_and_used)
    assert {row.merchant_id for row in stored} == {merchant.id} and len(stored) == 2
    assert all(key not in (row.key_hash, row.prefix) for row in stored)
    assert statuses == [401, 200]  # --revoke-old retired the first key


def test_an_unknown_merchant_gets_a_message(database_url: str) -> None:
    result = api_key(database_url, "0799999999")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "No merchant has that number." in result.stderr and "Traceback" not in result.output


def test_a_malformed_number_gets_a_message(database_url: str) -> None:
    result = api_key(database_url, "07abc")
    assert result.exit_code == 2 and "only digits" in result.stderr


def test_a_key_for_a_merchant_who_cannot_invoice_says_so(database_url: str) -> None:
    async def add_merchant(sessions: SessionFactory) -> Merchant:
        async with sessions() as session, session.begin():
            return await factories.merchant(
                session, phone="254700000010", status=MerchantStatus.SUSPENDED
            )

    with_sessions(database_url, add_merchant)
    result = api_key(database_url, "0700000010")
    assert result.exit_code == 0 and result.stdout.strip().startswith("iq_")
    assert "Note: this merchant is suspended" in result.stderr
    assert "invoiceiq merchant approve" in result.stderr
