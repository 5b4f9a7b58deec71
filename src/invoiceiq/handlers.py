"""The outbox topic → handler table, wired once per process.

A row whose topic has no handler goes dead with that reason rather than being silently skipped.
"""

from __future__ import annotations

from invoiceiq.config import Settings
from invoiceiq.db.engine import SessionFactory
from invoiceiq.db.uow import unit_of_work
from invoiceiq.notifications.sender import Sender
from invoiceiq.notifications.service import SEND_TOPIC
from invoiceiq.outbox.repository import ClaimedRow
from invoiceiq.payments import service as payment_service
from invoiceiq.payments.jobs import PaymentJobs
from invoiceiq.providers import Providers
from invoiceiq.whatsapp import callbacks
from invoiceiq.worker import Handler, RetryLater

# A status can overtake the answer to the send it is about; try again shortly.
STATUS_RETRY_DELAY = 1.0


def outbox_handlers(
    settings: Settings, sessions: SessionFactory, providers: Providers
) -> dict[str, Handler]:
    async def stored_event(row: ClaimedRow) -> None:
        async with unit_of_work(sessions) as session:
            handled = await callbacks.handle_event(session, settings, row.topic, row.payload)
        if not handled:
            raise RetryLater("event not applicable yet", delay=STATUS_RETRY_DELAY)

    payments = PaymentJobs(sessions=sessions, daraja=providers.daraja, settings=settings)
    return {
        SEND_TOPIC: Sender(sessions=sessions, client=providers.whatsapp, settings=settings),
        callbacks.INBOUND_TOPIC: stored_event,
        callbacks.STATUS_TOPIC: stored_event,
        payment_service.PUSH_TOPIC: payments.push,
        payment_service.RECONCILE_TOPIC: payments.reconcile,
        payment_service.CONFIRM_TOPIC: payments.confirm,
        payment_service.ORPHAN_TOPIC: payments.orphan_callback,
    }
