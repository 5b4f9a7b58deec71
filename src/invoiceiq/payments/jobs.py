"""Outbox handlers that talk to Daraja: the STK push, the reconciler and callback confirmation.

Each runs at least once (STYLE §10). The push records "push sent at" in its own committed step
before calling Daraja; a re-run that finds it set never pushes again, and the reconciler settles
that attempt by STK Query. Ambiguous failures are never retried (a second PIN prompt).
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from invoiceiq.config import Settings
from invoiceiq.db.engine import SessionFactory
from invoiceiq.db.uow import unit_of_work
from invoiceiq.inbox import service as inbox
from invoiceiq.invoices import repository as invoice_repository
from invoiceiq.kit.clock import utcnow
from invoiceiq.mpesa.client import DarajaClient, StkQueryResult
from invoiceiq.mpesa.errors import DarajaError
from invoiceiq.mpesa.schemas import parse_callback
from invoiceiq.outbox.repository import ClaimedRow
from invoiceiq.payments import repository, service, settlement
from invoiceiq.payments.models import Payment
from invoiceiq.payments.states import PaymentStatus
from invoiceiq.worker import RetryLater

log = logging.getLogger(__name__)

CALLBACK_SOURCE = "mpesa"
# Between STK Queries of an attempt still "being processed": 5 s, then doubling to 30 s.
QUERY_BACKOFF_FIRST, QUERY_BACKOFF_MAX = 5.0, 30.0


def query_backoff(round_: int) -> float:
    return min(QUERY_BACKOFF_MAX, QUERY_BACKOFF_FIRST * 2.0**round_)


def callback_url(settings: Settings) -> str:
    secret = settings.mpesa_callback_secret.get_secret_value()
    return f"{settings.base_url}/payments/stk/callback/{secret}"


class PaymentJobs:
    def __init__(
        self, *, sessions: SessionFactory, daraja: DarajaClient, settings: Settings
    ) -> None:
        self._sessions = sessions
        self._daraja = daraja
        self._settings = settings

    # The push ---------------------------------------------------------------------------------

    async def push(self, row: ClaimedRow) -> None:
        payment_id = uuid.UUID(row.payload["payment_id"])
        async with unit_of_work(self._sessions) as session:
            if not await repository.claim_push(session, payment_id, at=utcnow()):
                return  # pushed before (or settled): never twice
            payment = await repository.get(session, payment_id)
            assert payment is not None
            invoice = await invoice_repository.get(session, payment.invoice_id)  # type: ignore[arg-type]
            assert invoice is not None
            # Scheduled with the claim, so an attempt whose push dies mid-way is still settled.
            await settlement.schedule_reconcile(
                session, payment, round_=0, delay=self._settings.reconcile_after
            )
        try:
            accepted = await self._daraja.stk_push(
                phone=payment.phone,
                amount=payment.amount_cents // 100,
                account_reference=invoice.number,
                description=f"Invoice {invoice.number}",
                callback_url=callback_url(self._settings),
            )
        except DarajaError as error:
            await self._push_failed(row, payment, error)
            return
        async with unit_of_work(self._sessions) as session:
            fresh = await repository.get(session, payment_id, lock=True)
            assert fresh is not None
            await service.record_accepted(
                session,
                fresh,
                checkout_request_id=accepted.checkout_request_id,
                merchant_request_id=accepted.merchant_request_id,
                request_body=accepted.request_body,
            )
            # Callbacks that came before we stored the id are applied now.
            for event in await inbox.unprocessed(
                session, CALLBACK_SOURCE, f"{accepted.checkout_request_id}:"
            ):
                await settlement.apply_callback(
                    session, self._settings, parse_callback(event.payload), event.payload
                )
                await inbox.mark_processed(session, event)

    async def _push_failed(self, row: ClaimedRow, payment: Payment, error: DarajaError) -> None:
        log.warning("stk push failed", extra={"kind": error.kind, "code": error.error_code})
        last_try = row.attempts >= self._settings.outbox_max_attempts
        async with unit_of_work(self._sessions) as session:
            if error.request_body:
                await repository.set_values(session, payment.id, request_body=error.request_body)
            if error.kind == "ambiguous":
                return  # may have raised a prompt: the reconciler settles it, no second push
            if error.kind == "transient" and not last_try:
                # Certainly not received (connect error, throttling): safe to push later.
                await repository.unclaim_push(session, payment.id)
            elif error.kind == "busy":
                await service.fail(
                    session, self._settings, payment, code="busy", tell_merchant=False
                )
                return
            else:
                code = (
                    "unreachable" if error.kind == "transient" else (error.error_code or "rejected")
                )
                await service.fail(session, self._settings, payment, code=code, tell_merchant=False)
                return
        raise RetryLater(error.message)

    # The reconciler and confirmation ------------------------------------------------------------

    async def reconcile(self, row: ClaimedRow) -> None:
        """Settle an attempt still INITIATED after RECONCILE_AFTER, by STK Query."""
        payment = await self._load(row)
        if payment is None or payment.status is not PaymentStatus.INITIATED:
            return
        round_ = int(row.payload.get("round", 0))
        overdue = self._age(payment) >= self._settings.reconcile_give_up
        result = await self._query(payment) if payment.checkout_request_id else None
        async with unit_of_work(self._sessions) as session:
            fresh = await repository.get(session, payment.id, lock=True)
            if fresh is None or fresh.status is not PaymentStatus.INITIATED:
                return
            if result is not None and result.state == "success":
                await service.mark_success(session, self._settings, fresh, confirmed_by="query")
            elif result is not None and result.state == "failed":
                await service.fail(
                    session,
                    self._settings,
                    fresh,
                    code=result.result_code or "failed",
                    description=result.result_desc,
                )
            elif overdue:
                await service.fail(session, self._settings, fresh, code="no_response")
            else:
                await settlement.schedule_reconcile(
                    session, fresh, round_=round_ + 1, delay=query_backoff(round_)
                )

    async def confirm(self, row: ClaimedRow) -> None:
        """A success callback is a claim: apply it only when the STK Query agrees."""
        payment = await self._load(row)
        if payment is None or payment.status is PaymentStatus.SUCCESS or payment.needs_review:
            return
        round_ = int(row.payload.get("round", 0))
        result = await self._query(payment) if payment.checkout_request_id else None
        overdue = self._age(payment) >= self._settings.reconcile_give_up
        async with unit_of_work(self._sessions) as session:
            fresh = await repository.get(session, payment.id, lock=True)
            if fresh is None or fresh.status is PaymentStatus.SUCCESS:
                return
            if result is not None and result.state == "success":
                await service.mark_success(session, self._settings, fresh, confirmed_by="callback")
            elif result is not None and result.state == "failed":
                await service.flag(
                    session, fresh, "the callback said paid, but M-PESA's query denies it"
                )
            elif overdue:
                await service.flag(session, fresh, "M-PESA never confirmed the reported payment")
            else:
                await settlement.schedule_confirmation(
                    session, fresh, round_=round_ + 1, delay=query_backoff(round_)
                )

    async def orphan_callback(self, row: ClaimedRow) -> None:
        """A callback whose CheckoutRequestID was unknown when it came, looked at again later."""
        key = row.payload["external_id"]
        async with unit_of_work(self._sessions) as session:
            event = await inbox.get(session, CALLBACK_SOURCE, key)
            if event is None or event.processed_at is not None:
                return
            callback = parse_callback(event.payload)
            applied = await settlement.apply_callback(
                session, self._settings, callback, event.payload
            )
            if not applied and callback.succeeded:
                matched = await settlement.match_orphan_success(session, self._settings, callback)
                if matched is not None:
                    await settlement.apply_callback(
                        session, self._settings, callback, event.payload
                    )
                else:
                    await settlement.keep_unmatched_success(session, callback, event.payload)
            await inbox.mark_processed(session, event, None if applied else "no matching attempt")

    async def _load(self, row: ClaimedRow) -> Payment | None:
        async with unit_of_work(self._sessions) as session:
            return await repository.get(session, uuid.UUID(row.payload["payment_id"]))

    async def _query(self, payment: Payment) -> StkQueryResult | None:
        assert payment.checkout_request_id is not None
        try:
            return await self._daraja.stk_query(payment.checkout_request_id)
        except DarajaError as error:
            log.warning("stk query failed", extra={"kind": error.kind, "code": error.error_code})
            return None  # counts as "no answer": asked again, or given up when overdue

    def _age(self, payment: Payment) -> float:
        started: datetime = payment.push_sent_at or payment.created_at
        return (utcnow() - started) / timedelta(seconds=1)
