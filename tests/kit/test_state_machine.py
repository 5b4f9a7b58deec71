"""Transition tables: every allowed and refused move, applied as conditional UPDATEs."""

from __future__ import annotations

import asyncio
import itertools

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.db.engine import SessionFactory
from invoiceiq.db.models import Invoice, Payment
from invoiceiq.db.uow import unit_of_work
from invoiceiq.invoices.states import INVOICE_TRANSITIONS, InvoiceStatus
from invoiceiq.kit.state_machine import TransitionRefused
from invoiceiq.payments.states import PAYMENT_TRANSITIONS, PaymentStatus
from support import factories

I, P = InvoiceStatus, PaymentStatus  # noqa: E741 - short names keep the tables readable

INVOICE_ALLOWED = {
    (I.PENDING, I.SENT),
    (I.PENDING, I.PAID),
    (I.PENDING, I.CANCELLED),
    (I.SENT, I.PAID),
    (I.SENT, I.CANCELLED),
}
PAYMENT_ALLOWED = {(P.INITIATED, P.SUCCESS), (P.INITIATED, P.FAILED), (P.FAILED, P.SUCCESS)}


def test_tables_match_the_design() -> None:
    for source, target in itertools.product(I, I):
        assert INVOICE_TRANSITIONS.allows(source, target) == ((source, target) in INVOICE_ALLOWED)
    for source, target in itertools.product(P, P):
        assert PAYMENT_TRANSITIONS.allows(source, target) == ((source, target) in PAYMENT_ALLOWED)
    assert INVOICE_TRANSITIONS.is_terminal(I.PAID) and INVOICE_TRANSITIONS.is_terminal(I.CANCELLED)
    assert PAYMENT_TRANSITIONS.is_terminal(P.SUCCESS)
    assert not PAYMENT_TRANSITIONS.is_terminal(P.FAILED)


@pytest.mark.parametrize(("source", "target"), list(itertools.product(I, I)))
async def test_invoice_transition(session: AsyncSession, source: I, target: I) -> None:
    row = await factories.invoice(session, status=source)
    if (source, target) in INVOICE_ALLOWED:
        await INVOICE_TRANSITIONS.apply(session, Invoice, row.id, target)
        assert await _status(session, Invoice, row.id) == target
    else:
        with pytest.raises(TransitionRefused) as refused:
            await INVOICE_TRANSITIONS.apply(session, Invoice, row.id, target)
        assert refused.value.current == source.value
        assert await _status(session, Invoice, row.id) == source


@pytest.mark.parametrize(("source", "target"), list(itertools.product(P, P)))
async def test_payment_transition(session: AsyncSession, source: P, target: P) -> None:
    row = await factories.payment(session, status=source)
    if (source, target) in PAYMENT_ALLOWED:
        await PAYMENT_TRANSITIONS.apply(session, Payment, row.id, target)
        assert await _status(session, Payment, row.id) == target
    else:
        with pytest.raises(TransitionRefused):
            await PAYMENT_TRANSITIONS.apply(session, Payment, row.id, target)
        assert await _status(session, Payment, row.id) == source


async def test_explicit_source_must_match_the_row(session: AsyncSession) -> None:
    row = await factories.invoice(session, status=I.PENDING)
    with pytest.raises(TransitionRefused):
        await INVOICE_TRANSITIONS.apply(session, Invoice, row.id, I.PAID, source=I.SENT)
    with pytest.raises(TransitionRefused):  # the table forbids PAID -> CANCELLED outright
        await INVOICE_TRANSITIONS.apply(session, Invoice, row.id, I.CANCELLED, source=I.PAID)
    assert await _status(session, Invoice, row.id) == I.PENDING


async def test_transition_sets_extra_values_and_refreshes_loaded_row(session: AsyncSession) -> None:
    row = await factories.invoice(session, status=I.SENT)
    stamp = row.created_at
    await INVOICE_TRANSITIONS.apply(session, Invoice, row.id, I.PAID, values={"paid_at": stamp})
    assert row.status == I.PAID  # the identity map sees the UPDATE
    assert row.paid_at == stamp


async def test_unknown_row_is_refused(session: AsyncSession) -> None:
    import uuid

    with pytest.raises(TransitionRefused) as refused:
        await INVOICE_TRANSITIONS.apply(session, Invoice, uuid.uuid4(), I.PAID)
    assert refused.value.current is None


async def test_two_concurrent_transitions_from_the_same_state_one_wins(
    sessions: SessionFactory,
) -> None:
    async with unit_of_work(sessions) as session:
        row = await factories.invoice(session, status=I.SENT)
    gate = asyncio.Event()

    async def move(target: I) -> str:
        await gate.wait()
        try:
            async with unit_of_work(sessions) as session:
                await INVOICE_TRANSITIONS.apply(session, Invoice, row.id, target)
        except TransitionRefused:
            return "refused"
        return target.value

    racers = [asyncio.create_task(move(t)) for t in (I.PAID, I.CANCELLED, I.PAID, I.CANCELLED)]
    gate.set()
    outcomes = await asyncio.gather(*racers)
    winners = [o for o in outcomes if o != "refused"]
    assert len(winners) == 1
    async with sessions() as session:
        assert (await _status(session, Invoice, row.id)).value == winners[0]


async def _status(session: AsyncSession, model: type, row_id: object) -> object:
    return await session.scalar(sa.select(model.status).where(model.id == row_id))  # type: ignore[attr-defined]
