"""A worker process killed (SIGKILL) right after its STK push reached M-PESA: the customer gets
exactly one PIN prompt, and the payment is still settled.

The app serves with `--no-worker` semantics. A real `invoiceiq worker` process pointed at it
(its in-process simulator stands in for 360dialog and Daraja) makes the push and is killed; the
product's Worker with the product's handlers, run in the test process, then takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from invoiceiq.config import Settings
from invoiceiq.db.engine import make_engine, make_session_factory
from invoiceiq.db.models import Payment
from invoiceiq.db.uow import unit_of_work
from invoiceiq.handlers import outbox_worker, worker_options
from invoiceiq.invoices.states import InvoiceStatus
from invoiceiq.outbox.models import OutboxMessage
from invoiceiq.outbox.states import OutboxStatus
from invoiceiq.payments.service import PUSH_TOPIC
from invoiceiq.payments.states import PaymentStatus
from invoiceiq.payments.sweep import SETTLING_TOPICS
from invoiceiq.providers import make_providers
from payments.flows import (
    BUSINESS,
    CUSTOMER,
    MERCHANT,
    RECEIPT,
    answer,
    configure,
    drained,
    prompts,
    tap,
    the_invoice,
    the_payment,
    wait_prompt,
    wait_rows,
    with_text,
)
from support import factories
from support.app_server import RunningApp, running_app


class WorkerProcesses:
    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._started: list[subprocess.Popen[bytes]] = []

    def start(self, **settings: str) -> subprocess.Popen[bytes]:
        # Only our settings: none of the developer's environment or .env (cwd is empty).
        fields = set(Settings.model_fields)
        env = {k: v for k, v in os.environ.items() if k.lower() not in fields}
        env.update({name.upper(): value for name, value in settings.items()})
        process = subprocess.Popen(
            [sys.executable, "-m", "invoiceiq", "worker"],
            cwd=self._directory,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self._started:
            if process.poll() is None:
                process.kill()
            process.wait()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[WorkerProcesses]:
    processes = WorkerProcesses(tmp_path)
    yield processes
    processes.stop_all()


async def seed_invoice(database_url: str) -> str:
    """A merchant and an invoice already delivered to the customer (the merchant's side has
    its own tests); its number."""
    engine = make_engine(database_url)
    try:
        async with unit_of_work(make_session_factory(engine)) as session:
            owner = await factories.merchant(session, phone=MERCHANT, business_name=BUSINESS)
            invoice = await factories.invoice(session, merchant=owner, customer_phone=CUSTOMER)
            return invoice.number
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def worker_in_this_process(app: RunningApp, **options_: float) -> AsyncIterator[None]:
    """What `invoiceiq worker` runs, in the test's own process (no second start-up to wait for)."""
    engine = make_engine(app.settings.database_url)
    sessions = make_session_factory(engine)
    providers = make_providers(app.settings, local_origin=app.origin, sessions=sessions)
    options = dataclasses.replace(worker_options(app.settings), poll_interval=0.1, **options_)
    worker = outbox_worker(app.settings, sessions, providers, options)
    task = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        await worker.stop()
        await task
        await providers.aclose()
        await engine.dispose()


async def test_a_worker_killed_after_the_push_pushes_once_and_the_payment_settles(
    database_url: str, workers: WorkerProcesses
) -> None:
    number = await seed_invoice(database_url)
    async with running_app(database_url, run_worker=False, outbox_lease=1) as app:
        # Daraja keeps the push's answer: the prompt is on the phone, the worker still waits.
        await configure(app, faults__daraja__timeout_after=1.0, timeout_hold_s=60)
        process = workers.start(database_url=database_url, base_url=app.origin, outbox_lease="1")
        await tap(app, CUSTOMER, f"pay:{number}")
        prompt = await wait_prompt(app, timeout=60)
        pushed = await the_payment(database_url, lambda p: p.push_sent_at is not None)
        process.kill()
        process.wait()
        async with worker_in_this_process(app):
            # The push row is claimed again once the dead worker's lease ends, and does nothing.
            await wait_rows(
                database_url,
                OutboxMessage,
                lambda rs: [(r.status, r.attempts) for r in rs] == [(OutboxStatus.DONE, 2)],
                OutboxMessage.topic == PUSH_TOPIC,
            )
            untouched = await the_payment(database_url, lambda p: True)
            await answer(app, prompt, "accept")
            paid = await the_payment(database_url, lambda p: p.status is PaymentStatus.SUCCESS)
            await drained(database_url)
        all_prompts = await prompts(app)
        customer_inbox = await app.phone(CUSTOMER).inbox()
        merchant_inbox = await app.phone(MERCHANT).inbox()

    assert pushed.checkout_request_id is None  # the worker died before storing the answer
    # The re-run pushed nothing (a second push would have been refused: the phone was busy).
    assert untouched.status is PaymentStatus.INITIATED and untouched.result_code is None
    assert len(all_prompts) == 1
    # Matched to the attempt by phone and amount, then confirmed by STK Query.
    assert paid.checkout_request_id == prompt["checkout_request_id"]
    assert paid.receipt_number and paid.confirmed_by == "callback"
    assert (await the_invoice(database_url, number)).status is InvoiceStatus.PAID
    assert len(with_text(customer_inbox, RECEIPT)) == 1
    # The merchant has not written lately: the receipt goes as its template.
    assert [m["template"]["name"] for m in merchant_inbox if m["template"]] == [
        "merchant_payment_received"
    ]


async def test_an_attempt_whose_jobs_all_died_is_still_settled_by_the_sweep(
    database_url: str,
) -> None:
    number = await seed_invoice(database_url)
    async with running_app(database_url, run_worker=False) as app:
        await configure(app, faults__callbacks__drop=1.0)
        async with worker_in_this_process(app, sweep_interval=0.2):
            await tap(app, CUSTOMER, f"pay:{number}")
            prompt = await wait_prompt(app)
            await wait_rows(
                database_url,
                OutboxMessage,
                lambda rs: [r.status for r in rs] == [OutboxStatus.DONE],
                OutboxMessage.topic == PUSH_TOPIC,
            )
        # The customer pays; the callback is lost. A database outage longer than the rows'
        # retries leaves the reconcile row dead, and RECONCILE_GIVE_UP goes by.
        await answer(app, prompt, "accept")
        await outage_outlived(database_url, app.settings.reconcile_give_up)
        open_after_outage = await the_payment(database_url, lambda p: True)
        async with worker_in_this_process(app, sweep_interval=0.2):
            paid = await the_payment(database_url, lambda p: p.status is PaymentStatus.SUCCESS)
            await drained(database_url)
        customer_inbox = await app.phone(CUSTOMER).inbox()
        all_prompts = await prompts(app)

    assert open_after_outage.status is PaymentStatus.INITIATED
    assert paid.confirmed_by == "query" and paid.receipt_number is None
    assert (await the_invoice(database_url, number)).status is InvoiceStatus.PAID
    assert len(with_text(customer_inbox, RECEIPT)) == 1
    assert len(all_prompts) == 1


async def outage_outlived(database_url: str, give_up: float) -> None:
    """What a long database outage leaves: every row still to run about the attempt dead after
    its retries, and the attempt pushed more than RECONCILE_GIVE_UP ago."""
    engine = make_engine(database_url)
    try:
        async with unit_of_work(make_session_factory(engine)) as session:
            dead = await session.execute(
                sa.update(OutboxMessage)
                .where(
                    OutboxMessage.topic.in_(SETTLING_TOPICS),
                    OutboxMessage.status == OutboxStatus.PENDING,
                )
                .values(status=OutboxStatus.DEAD, last_error="connection refused")
            )
            assert dead.rowcount == 1  # type: ignore[attr-defined]  # the reconcile row
            payment = await session.scalar(sa.select(Payment))
            assert payment is not None and payment.push_sent_at is not None
            payment.push_sent_at -= timedelta(seconds=give_up + 1)
    finally:
        await engine.dispose()
