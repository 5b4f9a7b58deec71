"""The outbox worker and its topic → handler table, wired once per process.

A row whose topic has no handler goes dead with that reason rather than being silently skipped.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.config import Settings
from invoiceiq.db.engine import SessionFactory
from invoiceiq.db.uow import unit_of_work
from invoiceiq.notifications.sender import Sender
from invoiceiq.notifications.service import SEND_TOPIC
from invoiceiq.outbox.repository import ClaimedRow
from invoiceiq.payments import service as payment_service
from invoiceiq.payments import sweep
from invoiceiq.payments.jobs import PaymentJobs
from invoiceiq.providers import Providers
from invoiceiq.whatsapp import callbacks
from invoiceiq.worker import (
    Handler,
    OnDead,
    Recorded,
    RetryLater,
    Sweep,
    Worker,
    WorkerOptions,
    finish,
)

log = logging.getLogger(__name__)

# A status can overtake the answer to the send it is about; try again shortly, then less often
# (1 s, 2 s, … up to 5 s: 20 s over the first 7 of the default 8 attempts, past the default
# PROVIDER_TIMEOUT of 15 s, the longest a send's answer can take).
STATUS_RETRY_DELAY = 1.0
STATUS_RETRY_DELAY_MAX = 5.0


# Fly.io kills a process 30 s after SIGTERM (fly.toml kill_timeout): the worker lets its runs
# finish for at most this long, leaving the rest to release what is still in hand.
STOP_GRACE_MAX = 25.0


def worker_options(settings: Settings) -> WorkerOptions:
    return WorkerOptions(
        lease=settings.outbox_lease,
        max_attempts=settings.outbox_max_attempts,
        backoff_max=settings.outbox_backoff_max,
        handler_timeout=settings.outbox_handler_timeout,
        sweep_interval=settings.outbox_sweep_interval,
        # A send cut short on SIGTERM is sent again by the next worker (its answer, the
        # message id, never recorded): a deploy must let a slow send finish.
        stop_grace=min(STOP_GRACE_MAX, settings.provider_timeout + 5),
    )


def outbox_worker(
    settings: Settings,
    sessions: SessionFactory,
    providers: Providers,
    options: WorkerOptions | None = None,
) -> Worker:
    """The worker with every topic's handler (`options` default to the settings')."""
    sender = Sender(sessions=sessions, client=providers.whatsapp, settings=settings)
    return Worker(
        sessions,
        _handlers(settings, sessions, providers, sender),
        options or worker_options(settings),
        on_abandoned={SEND_TOPIC: sender.abandoned},
        on_dead=ON_DEAD,
        sweeps=[_payment_sweep(settings)],
    )


# Work a person must pick up when its row dies (the sweep resumes only open attempts).
ON_DEAD: dict[str, OnDead] = {payment_service.CONFIRM_TOPIC: sweep.claim_left_unconfirmed}


def _payment_sweep(settings: Settings) -> Sweep:
    async def resume_stuck_payments(session: AsyncSession, now: datetime) -> int:
        return await sweep.resume_stuck(session, settings, now=now)

    return resume_stuck_payments


def _handlers(
    settings: Settings, sessions: SessionFactory, providers: Providers, sender: Sender
) -> dict[str, Handler]:
    give_up_after = max(1, settings.outbox_max_attempts - 1)

    async def stored_event(row: ClaimedRow) -> Recorded | None:
        async with unit_of_work(sessions) as session:
            handled = await callbacks.handle_event(session, settings, row.topic, row.payload)
            if handled:
                return await finish(session, row)
        if row.attempts >= give_up_after:
            # A status of a copy whose send's answer never came back (a timeout after sending,
            # then a retry that went out again): no message will ever carry its id. It stays
            # in the inbox; the row ends done, since there is nothing for an operator to fix.
            # One attempt is kept in hand: a worker killed during this one must not make the
            # row dead (a row abandoned on its last attempt is buried as a poison row).
            log.info("whatsapp status for a message we never recorded; dropped")
            return None
        delay = min(STATUS_RETRY_DELAY * row.attempts, STATUS_RETRY_DELAY_MAX)
        raise RetryLater("event not applicable yet", delay=delay)

    payments = PaymentJobs(sessions=sessions, daraja=providers.daraja, settings=settings)
    return {
        SEND_TOPIC: sender,
        callbacks.INBOUND_TOPIC: stored_event,
        callbacks.STATUS_TOPIC: stored_event,
        payment_service.PUSH_TOPIC: payments.push,
        payment_service.RECONCILE_TOPIC: payments.reconcile,
        payment_service.CONFIRM_TOPIC: payments.confirm,
        payment_service.ORPHAN_TOPIC: payments.orphan_callback,
    }
