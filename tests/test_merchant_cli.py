"""`invoiceiq merchant show` and `merchant approve --name`: the operator approves the name they
checked, never one the merchant changed to since."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from typer.testing import CliRunner

from invoiceiq.cli import app as cli
from invoiceiq.db.engine import SessionFactory
from invoiceiq.db.models import Merchant
from invoiceiq.merchants.states import MerchantStatus
from support import factories
from support.cli import with_sessions

PHONE = "254700000011"


def merchant_cli(database_url: str, *args: str) -> Any:
    return CliRunner().invoke(cli, ["merchant", *args], env={"DATABASE_URL": database_url})


def add_merchant(database_url: str, **values: Any) -> None:
    async def add(sessions: SessionFactory) -> None:
        async with sessions() as session, session.begin():
            await factories.merchant(session, phone=PHONE, **values)

    with_sessions(database_url, add)


def stored(database_url: str) -> Merchant:
    async def read(sessions: SessionFactory) -> Merchant:
        async with sessions() as session:
            found = await session.scalar(sa.select(Merchant).where(Merchant.phone == PHONE))
        assert found is not None
        return found

    return with_sessions(database_url, read)


def test_show_says_what_approve_would_approve(database_url: str) -> None:
    add_merchant(
        database_url, business_name="Mama Mboga", pending_business_name="KPLC Token Refunds"
    )

    shown = merchant_cli(database_url, "show", "0700000011")

    assert shown.exit_code == 0, shown.output
    assert shown.stdout.strip() == (
        "2547•••••011: active, business name 'Mama Mboga'; asks to be renamed 'KPLC Token Refunds'"
    )
    assert PHONE not in shown.output


def test_approve_with_the_name_checked_refuses_a_name_changed_since(database_url: str) -> None:
    add_merchant(
        database_url,
        business_name="KPLC Prepaid Token Refunds",
        status=MerchantStatus.PENDING_APPROVAL,
    )

    refused = merchant_cli(database_url, "approve", "0700000011", "--name", "Mama Mboga")

    assert refused.exit_code == 1
    assert refused.stderr.strip() == (
        "2547•••••011 asks to be approved as 'KPLC Prepaid Token Refunds', not 'Mama Mboga': "
        "nothing approved."
    )
    assert stored(database_url).status is MerchantStatus.PENDING_APPROVAL

    approved = merchant_cli(
        database_url, "approve", "0700000011", "--name", " KPLC  Prepaid Token Refunds"
    )
    assert approved.exit_code == 0, approved.output
    assert "approved 2547•••••011 (KPLC Prepaid Token Refunds)" in approved.stdout
    assert stored(database_url).status is MerchantStatus.ACTIVE


def test_show_of_an_unknown_number_says_so(database_url: str) -> None:
    shown = merchant_cli(database_url, "show", "0799999999")
    assert shown.exit_code == 1 and "No merchant has that number." in shown.stderr
