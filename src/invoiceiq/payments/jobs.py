"""Outbox handlers that talk to Daraja: the STK push, the reconciler and callback confirmation.

Each runs at least once (STYLE §10). The push records "push sent at" in its own committed step
before calling Daraja; a re-run that finds it set never pushes again, and the reconciler settles
that attempt by STK Query. Ambiguous failures are never retried (a second PIN prompt).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.config import Settings
from invoiceiq.db.engine import SessionFactory, is_database_down
from invoiceiq.db.uow import unit_of_work
from invoiceiq.errors import AppError
from invoiceiq.inbox import service as inbox
from invoiceiq.invoices import repository as invoice_repository
from invoiceiq.invoices.numbering import number_as_meant
from invoiceiq.invoices.states import InvoiceStatus
from invoiceiq.kit.clock import utcnow
from invoiceiq.mpesa.client import DarajaClient, StkPushAccepted, StkQueryResult
from invoiceiq.mpesa.errors import DarajaError
from invoiceiq.mpesa.schemas import parse_callback
from invoiceiq.outbox.repository import ClaimedRow
from invoiceiq.payments import messages, repository, review, service, settlement, success
from invoiceiq.payments.models import Payment
from invoiceiq.payments.states import PaymentStatus
from invoiceiq.worker import RetryLater

log = logging.getLogger(__name__)

CALLBACK_SOURCE = "mpesa"
_NOT_PAYABLE = frozenset({InvoiceStatus.PAID, InvoiceStatus.CANCELLED})
# Between STK Queries of an attempt still "being processed": 5 s, then doubling to 30 s.
QUERY_BACKOFF_FIRST, QUERY_BACKOFF_MAX = 5.0, 30.0
# Storing an accepted push's ids while the database is unreachable: tried again for a minute
# (well within the worker's handler timeout), 0.5 s between tries, doubling to 8 s.
STORE_RETRY_FOR_S = 60.0
STORE_BACKOFF_FIRST, STORE_BACKOFF_MAX = 0.5, 8.0


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
            payment = await repository.get(session, payment_id)
            assert payment is not None
            invoice = await invoice_repository.get(session, payment.invoice_id)  # type: ignore[arg-type]
            assert invoice is not None
            if payment.push_sent_at is None and invoice.status in _NOT_PAYABLE:
                # Paid meanwhile (a late success of an earlier attempt) or cancelled: a prompt
                # now could only charge the customer twice.
                await service.withdraw(session, payment)
                return
            if not await repository.claim_push(session, payment_id, at=utcnow()):
                return  # pushed before (or settled): never twice
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
        await self._push_accepted(payment_id, accepted)

    async def _push_accepted(self, payment_id: uuid.UUID, accepted: StkPushAccepted) -> None:
        """Store Daraja's answer, trying again while the database is unreachable: the ids exist
        only in this process's memory, and a re-run of the row never pushes again, so lost
        here they are lost for good (the reconciler could not ask M-PESA about the prompt)."""
        delay = STORE_BACKOFF_FIRST
        deadline = time.monotonic() + STORE_RETRY_FOR_S
        while True:
            try:
                await self._store_accepted(payment_id, accepted)
                return
            except Exception as error:
                if not is_database_down(error):
                    raise
                if time.monotonic() + delay > deadline:
                    log.error(
                        "stk push accepted but its CheckoutRequestID could not be stored",
                        extra={"payment": str(payment_id)},
                    )
                    raise
                log.warning(
                    "storing an accepted stk push failed; trying again",
                    extra={"payment": str(payment_id)},
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, STORE_BACKOFF_MAX)

    async def _store_accepted(self, payment_id: uuid.UUID, accepted: StkPushAccepted) -> None:
        async with unit_of_work(self._sessions) as session:
            await repository.serialize_checkout(session, accepted.checkout_request_id)
            fresh = await repository.get(session, payment_id, lock=True)
            assert fresh is not None
            stored = await service.record_accepted(
                session,
                fresh,
                checkout_request_id=accepted.checkout_request_id,
                merchant_request_id=accepted.merchant_request_id,
                request_body=accepted.request_body,
            )
            if not stored:
                return
            # Callbacks that came before we stored the id are applied now, each in a savepoint:
            # one that cannot be applied must not take the stored id with it (the push is never
            # sent again, so the id would be lost for good). It stays unprocessed, and the job
            # its arrival queued looks at it again.
            for event in await inbox.unprocessed(
                session, CALLBACK_SOURCE, f"{accepted.checkout_request_id}:"
            ):
                try:
                    async with session.begin_nested():
                        callback = parse_callback(event.payload)
                        if await settlement.apply_callback(
                            session, self._settings, callback, event.payload
                        ):
                            await inbox.mark_processed(session, event)
                except Exception:
                    log.exception("early stk callback not applied; looked at again by a job")
                    # What it wrote was rolled back; so must the attempt's values in memory be.
                    await session.refresh(fresh)
            await service.tell_to_check_phone(session, fresh)

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
        if settlement.awaits_confirmation(payment):
            return  # a success claim is being confirmed: `confirm` settles it
        round_ = int(row.payload.get("round", 0))
        overdue = self._age(payment) >= self._settings.reconcile_give_up
        result = await self._query(payment) if payment.checkout_request_id else None
        async with unit_of_work(self._sessions) as session:
            fresh = await repository.get(session, payment.id, lock=True)
            if fresh is None or fresh.status is not PaymentStatus.INITIATED:
                return
            if settlement.awaits_confirmation(fresh):
                return  # the claim came while we asked
            if await self._apply_answer(session, fresh, result, confirmed_by="query"):
                return
            if overdue:
                await service.give_up(session, self._settings, fresh)
            else:
                await service.schedule_reconcile(
                    session, fresh, round_=round_ + 1, delay=query_backoff(round_)
                )

    async def _apply_answer(
        self,
        session: AsyncSession,
        payment: Payment,
        result: StkQueryResult | None,
        *,
        confirmed_by: str,
    ) -> bool:
        """Apply a final STK Query answer to an open attempt; False while it is still pending
        (or M-PESA did not answer). The receipt number comes from a success callback, if one
        was stored; the query never carries it."""
        if result is None or result.state == "pending":
            return False
        if result.state == "success":
            # M-PESA's word that the prompt, for the amount we pushed, was paid; a callback
            # that reported another amount stays flagged for the record (the merchant knows).
            receipt = settlement.claimed_receipt(payment)
            await success.mark_success(
                session, self._settings, payment, confirmed_by=confirmed_by, receipt=receipt
            )
            return True
        await service.fail(
            session,
            self._settings,
            payment,
            code=result.result_code or "failed",
            description=result.result_desc,
        )
        return True

    async def confirm(self, row: ClaimedRow) -> None:
        """A success callback is a claim: apply it only when the STK Query agrees."""
        payment = await self._load(row)
        if payment is None or payment.status is PaymentStatus.SUCCESS:
            return
        round_ = int(row.payload.get("round", 0))
        result = await self._query(payment) if payment.checkout_request_id else None
        claimed_at = str(row.payload.get("claimed_at") or utcnow().isoformat())
        claim_age = (utcnow() - datetime.fromisoformat(claimed_at)) / timedelta(seconds=1)
        overdue = min(self._age(payment), claim_age) >= self._settings.reconcile_give_up
        async with unit_of_work(self._sessions) as session:
            fresh = await repository.get(session, payment.id, lock=True)
            if fresh is None or fresh.status is PaymentStatus.SUCCESS:
                return
            if result is not None and result.state == "success":
                receipt = settlement.claimed_receipt(fresh)
                await success.mark_success(
                    session, self._settings, fresh, confirmed_by="callback", receipt=receipt
                )
            elif result is not None and result.state == "failed":
                await review.flag(session, fresh, messages.CLAIM_DENIED_REASON)
                # The query is M-PESA's word: an open attempt has failed, and can be retried.
                await self._apply_answer(session, fresh, result, confirmed_by="query")
            elif overdue and fresh.status is PaymentStatus.INITIATED:
                # Neither the invoice nor the phone may stay blocked; the customer is told not
                # to pay again if M-PESA confirmed it to them.
                await service.give_up_unconfirmed(
                    session, self._settings, fresh, messages.CLAIM_UNCONFIRMED_REASON
                )
            elif overdue:  # a late claim on an attempt that had failed already
                await review.flag(session, fresh, messages.CLAIM_UNCONFIRMED_REASON)
            else:
                await settlement.schedule_confirmation(
                    session,
                    fresh,
                    round_=round_ + 1,
                    delay=query_backoff(round_),
                    claimed_at=claimed_at,
                )

    async def orphan_callback(self, row: ClaimedRow) -> None:
        """A stored callback not applied when it came (its CheckoutRequestID was unknown, or
        applying it failed), looked at again: applied, matched, or kept for review."""
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
                    applied = await settlement.apply_callback(
                        session, self._settings, callback, event.payload
                    )
                else:
                    await settlement.keep_unmatched_success(session, callback, event.payload)
            await inbox.mark_processed(session, event, None if applied else "no matching attempt")

    # The operator's `payments query` -----------------------------------------------------------

    async def query_invoice(self, number: str) -> str:
        """STK Query of the invoice's open attempt, applied as the reconciler would."""
        async with unit_of_work(self._sessions) as session:
            payment = await _open_attempt_of(session, number)
        assert payment.checkout_request_id is not None
        try:
            result = await self._daraja.stk_query(payment.checkout_request_id)
        except DarajaError as error:
            raise AppError(f"M-PESA did not answer the query: {error.message}") from None
        async with unit_of_work(self._sessions) as session:
            fresh = await repository.get(session, payment.id, lock=True)
            assert fresh is not None
            if fresh.status is not PaymentStatus.INITIATED:
                return f"payment {fresh.id} was settled meanwhile: {fresh.status.value}"
            if result.state == "failed" and settlement.awaits_confirmation(fresh):
                # As the confirmation job does: a success claim denied is kept for a person.
                await review.flag(session, fresh, messages.CLAIM_DENIED_REASON)
            if not await self._apply_answer(session, fresh, result, confirmed_by="query"):
                return (
                    f"payment {fresh.id}: M-PESA is still processing it (the customer has not "
                    "answered the prompt yet); ask again in a minute"
                )
            code = f" (result {fresh.result_code})" if fresh.result_code else ""
            return f"payment {fresh.id}: {fresh.status.value}{code}"

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
        return (utcnow() - payment.started_at) / timedelta(seconds=1)


async def _open_attempt_of(session: AsyncSession, raw_number: str) -> Payment:
    """The open attempt of an invoice that M-PESA can be asked about; AppError saying why not."""
    number = number_as_meant(raw_number)
    if not number:
        raise AppError("Type the invoice number, like INV7K3QX9A.")
    invoice = await invoice_repository.get_by_number(session, number)
    if invoice is None:
        raise AppError(f"No invoice {number}.")
    payment = await repository.open_attempt(session, invoice.id)
    if payment is None:
        latest = await repository.latest_for_invoice(session, invoice.id)
        last = f"; its last attempt is {latest.status.value}" if latest else ""
        raise AppError(
            f"Invoice {number} is {invoice.status.value} with no open payment attempt{last}."
        )
    if payment.checkout_request_id is None:
        raise AppError(
            f"Payment {payment.id} of invoice {number} has no CheckoutRequestID (the answer to "
            "its push was lost), so M-PESA cannot be asked about it. A success callback is "
            "still matched to it by phone and amount; otherwise the reconciler fails it "
            "RECONCILE_GIVE_UP seconds after the push and flags it for review."
        )
    return payment
