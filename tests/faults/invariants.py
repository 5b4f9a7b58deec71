"""What must hold after a fault run, checked from the database and from the simulator's records.

- every invoice ends PAID (one per flow), with exactly one successful attempt, none flagged;
- no attempt sees more than one STK push: every prompt at the simulator is the one push of a
  distinct attempt of its invoice (a prompt whose push answer never reached the app counts
  against an attempt that went out without a stored CheckoutRequestID);
- money taken by an accepted prompt is a recorded success, except when neither the push's
  answer nor its callback ever reached the app: nothing can then tell the app. Its attempt is
  given up FAILED and flagged for review (the customer asked not to pay again if M-PESA
  confirmed it); that case is reported as flagged for review, or as money at risk if the
  attempt was not flagged, with its story, rather than failed;
- no attempt is flagged for review, except those blind attempts, which are counted;
- each receipt (customer's and merchant's) is created once: one message, one outbox row, and
  it reached the phone;
- the only extra deliveries are copies whose answer never reached the app: a simulated timeout
  after sending, or (with kills) a worker killed between the send and recording it; they are
  counted and reported;
- no outbox row ends dead, nothing is left INITIATED.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from faults.people import Flow, SimulatorControl, classify
from invoiceiq.db.engine import make_engine, make_session_factory
from invoiceiq.db.models import Invoice, MessageLog, OutboxMessage, Payment
from invoiceiq.invoices.states import InvoiceStatus
from invoiceiq.notifications.models import Direction
from invoiceiq.outbox.states import OutboxStatus
from invoiceiq.payments.messages import OUTCOME_UNKNOWN_REASON
from invoiceiq.payments.states import PaymentStatus

SEND_TOPIC = "whatsapp.send"


@dataclass
class Evidence:
    flows: Sequence[Flow]
    invoices: list[Invoice]
    payments: list[Payment]
    logs: list[MessageLog]
    outbox: list[OutboxMessage]
    prompts: list[dict[str, Any]]
    inboxes: dict[str, list[dict[str, Any]]]
    kills: list[tuple[str, datetime]] = field(default_factory=list)

    @property
    def worker_kills(self) -> list[datetime]:
        return [at for name, at in self.kills if name.startswith("worker")]


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    suspects: list[str] = field(default_factory=list)  # invoice numbers to tell the story of

    def fail(self, message: str, number: str | None = None) -> None:
        self.violations.append(message)
        if number is not None and number not in self.suspects:
            self.suspects.append(number)

    def text(self) -> str:
        body = "\n".join(f"  {line}" for line in self.lines)
        broken = "\n".join(f"  VIOLATED: {v}" for v in self.violations[:40])
        more = len(self.violations) - 40
        tail = f"\n  … and {more} more" if more > 0 else ""
        return f"fault run report\n{body}\n{broken}{tail}".rstrip()


async def _all(database_url: str, model: Any, *where: Any) -> list[Any]:
    engine = make_engine(database_url)
    try:
        async with make_session_factory(engine)() as session:
            return list(await session.scalars(sa.select(model).where(*where)))
    finally:
        await engine.dispose()


async def settle(database_url: str, *, timeout: float) -> None:
    """Wait until no outbox row is pending or running (scheduled checks included)."""
    deadline = time.monotonic() + timeout
    busy = (OutboxStatus.PENDING, OutboxStatus.RUNNING)
    while await _all(database_url, OutboxMessage, OutboxMessage.status.in_(busy)):
        if time.monotonic() > deadline:
            return  # the checks say what is left over
        await asyncio.sleep(0.5)


async def collect(
    sim: SimulatorControl,
    database_url: str,
    flows: Sequence[Flow],
    *,
    kills: Sequence[tuple[str, datetime]] = (),
) -> Evidence:
    phones = [phone for flow in flows for phone in (flow.merchant, flow.customer)]
    inboxes = dict(zip(phones, await asyncio.gather(*map(sim.inbox, phones)), strict=True))
    return Evidence(
        flows=flows,
        invoices=await _all(database_url, Invoice),
        payments=await _all(database_url, Payment),
        logs=await _all(database_url, MessageLog, MessageLog.direction == Direction.OUTBOUND),
        outbox=await _all(database_url, OutboxMessage),
        prompts=await sim.prompts(),
        inboxes=inboxes,
        kills=list(kills),
    )


def check(evidence: Evidence) -> Report:
    report = Report()
    invoices = _check_invoices(evidence, report)
    _check_attempts(evidence, invoices, report)
    _check_pushes(evidence, invoices, report)
    _check_receipts(evidence, invoices, report)
    _check_deliveries(evidence, report)
    _check_outbox(evidence, report)
    for number in report.suspects[:5]:
        report.lines.extend(_story(evidence, number))
    return report


def _story(evidence: Evidence, number: str) -> list[str]:
    """Everything known about one invoice, in wall-clock time, to find a root cause."""
    invoice = next((i for i in evidence.invoices if i.number == number), None)
    if invoice is None:
        return [f"story of {number}: no such invoice"]
    flow = next((f for f in evidence.flows if f.customer == invoice.customer_phone), None)
    lines = [f"story of {number}:"]
    if flow is not None:
        lines.append(f"  customer started {flow.started_at:%H:%M:%S.%f}: {flow.timeline}")
    for p in sorted(evidence.payments, key=lambda p: p.created_at):
        if p.invoice_id == invoice.id:
            lines.append(
                f"  attempt {str(p.id)[:8]} {p.status.value} code={p.result_code} "
                f"created={p.created_at:%H:%M:%S.%f} pushed={_clock(p.push_sent_at)} "
                f"done={_clock(p.completed_at)} checkout=…{(p.checkout_request_id or '-')[-12:]} "
                f"by={p.confirmed_by} review={p.review_reason}"
            )
    for prompt in evidence.prompts:
        if prompt["account_reference"] == number:
            lines.append(
                f"  prompt …{prompt['checkout_request_id'][-12:]} at "
                f"{datetime.fromisoformat(prompt['at']):%H:%M:%S.%f} {prompt['state']} "
                f"result={prompt['result_code']}"
            )
    for log in sorted(evidence.logs, key=lambda log: log.created_at):
        if log.invoice_id == invoice.id:
            lines.append(
                f"  message {log.kind} to …{log.phone[-3:]} {log.status.value} "
                f"error={log.error_code} template={log.template_name} "
                f"created={log.created_at:%H:%M:%S.%f} answered={_clock(log.status_at)}"
            )
    lines.append(f"  kills: {[(n, f'{at:%H:%M:%S.%f}') for n, at in evidence.kills]}")
    return lines


def _clock(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment:%H:%M:%S.%f}"


def _check_invoices(evidence: Evidence, report: Report) -> dict[str, Invoice]:
    by_customer: dict[str, list[Invoice]] = defaultdict(list)
    for invoice in evidence.invoices:
        by_customer[invoice.customer_phone].append(invoice)
    found: dict[str, Invoice] = {}
    for flow in evidence.flows:
        mine = by_customer.get(flow.customer, [])
        if len(mine) != 1:
            report.fail(f"flow {flow.index}: {len(mine)} invoices instead of 1")
            continue
        found[flow.customer] = mine[0]
        if mine[0].status is not InvoiceStatus.PAID:
            report.fail(f"{flow.state}: invoice ended {mine[0].status.value}")
    paid = sum(i.status is InvoiceStatus.PAID for i in found.values())
    took = sorted(flow.took for flow in evidence.flows)
    ordered = sorted(evidence.flows, key=lambda f: f.took)
    report.lines.append(f"median flow: {ordered[len(ordered) // 2].timeline}")
    report.lines.append(f"fastest flow: {ordered[0].timeline}")
    taps = sum(flow.taps for flow in evidence.flows)
    report.lines.append(
        f"flows: {len(evidence.flows)}, invoices paid: {paid}; Pay taps: {taps}; seconds per "
        f"flow: median {took[len(took) // 2]:.0f}, slowest {took[-1]:.0f}"
    )
    return found


def _check_attempts(evidence: Evidence, invoices: dict[str, Invoice], report: Report) -> None:
    number_of = {invoice.id: invoice.number for invoice in invoices.values()}
    successes = Counter(
        p.invoice_id for p in evidence.payments if p.status is PaymentStatus.SUCCESS
    )
    for invoice in invoices.values():
        if successes[invoice.id] != 1:
            report.fail(
                f"{invoice.number}: {successes[invoice.id]} successful attempts", invoice.number
            )
    blind_flagged = []
    for payment in evidence.payments:
        where = number_of.get(payment.invoice_id, "no invoice")  # type: ignore[arg-type]
        if payment.status is PaymentStatus.INITIATED:
            report.fail(f"{where}: attempt {payment.id} left INITIATED", where)
        if payment.review_reason == OUTCOME_UNKNOWN_REASON:
            blind_flagged.append(payment)  # a push nobody heard back from: expected, counted
        elif payment.needs_review:
            report.fail(f"{where}: attempt flagged for review: {payment.review_reason}", where)
    if blind_flagged:
        later_paid = sum(p.status is PaymentStatus.SUCCESS for p in blind_flagged)
        report.lines.append(
            f"flagged for review, push outcome unknown: {len(blind_flagged)} attempt(s) given "
            f"up with no answer and no callback from M-PESA ({later_paid} paid later after all)"
        )
    codes = Counter(p.result_code for p in evidence.payments if p.status is PaymentStatus.FAILED)
    confirmed = Counter(p.confirmed_by for p in evidence.payments if p.confirmed_by)
    report.lines.append(
        f"attempts: {len(evidence.payments)}; failed by result code: {dict(codes)}; "
        f"successes confirmed by: {dict(confirmed)}"
    )


def _check_pushes(evidence: Evidence, invoices: dict[str, Invoice], report: Report) -> None:
    """Each prompt at the simulator is the one push of a distinct attempt of its invoice."""
    by_checkout = {p.checkout_request_id: p for p in evidence.payments if p.checkout_request_id}
    by_number = {invoice.number: invoice for invoice in invoices.values()}
    unmatched: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for prompt in evidence.prompts:
        number, checkout = prompt["account_reference"], prompt["checkout_request_id"]
        payment, invoice = by_checkout.get(checkout), by_number.get(number)
        if payment is None:
            unmatched[number].append(prompt)
        elif invoice is None or payment.invoice_id != invoice.id:
            report.fail(f"{number}: prompt {checkout} belongs to another invoice's attempt", number)
        elif prompt["result_code"] == "0" and payment.status is not PaymentStatus.SUCCESS:
            report.fail(
                f"{number}: money taken by {checkout}, attempt {payment.status.value}", number
            )
    at_risk = flagged = 0
    for number, prompts in unmatched.items():
        # A push whose answer was lost (a timeout, a kill mid-push) still belongs to one
        # attempt: one that went out without a stored CheckoutRequestID.
        blind = _blind_attempts(evidence, by_number.get(number))
        if len(prompts) > len(blind):
            report.fail(f"{number}: {len(prompts)} prompts no attempt accounts for", number)
        paid = [p for p in prompts if p["result_code"] == "0"]
        if paid and not blind:
            report.fail(f"{number}: money taken by a prompt no attempt knows", number)
        elif paid:
            if any(p.review_reason == OUTCOME_UNKNOWN_REASON for p in blind):
                flagged += len(paid)
            else:
                at_risk += len(paid)
            report.suspects.append(number)
    report.lines.append(
        f"STK prompts: {len(evidence.prompts)} for {len(by_checkout)} attempts with an id; "
        f"prompts whose id no attempt stored: {sum(map(len, unmatched.values()))}"
    )
    if flagged:
        report.lines.append(
            f"FLAGGED FOR REVIEW: {flagged} prompt(s) accepted by the customer whose push answer "
            "was lost (timeout or kill) and whose callback was lost too (serve down or dropped): "
            "the attempt ended FAILED no_response, flagged for review, the merchant told, and "
            "the customer asked not to pay again if M-PESA confirmed it; this run's customer "
            "paid again (see the stories)"
        )
    if at_risk:
        report.lines.append(
            f"MONEY AT RISK: {at_risk} prompt(s) accepted by the customer whose push answer was "
            "lost (timeout or kill) and whose callback was lost too (serve down or dropped): "
            "the attempt ended FAILED no_response and the customer paid again (see the stories)"
        )


def _blind_attempts(evidence: Evidence, invoice: Invoice | None) -> list[Payment]:
    if invoice is None:
        return []
    return [
        p
        for p in evidence.payments
        if p.invoice_id == invoice.id and p.push_sent_at is not None and not p.checkout_request_id
    ]


def _originals(evidence: Evidence) -> set[str]:
    """Message-log ids with their own outbox row (not a 131047 re-send as a template)."""
    return {
        str(row.payload.get("message_log_id"))
        for row in evidence.outbox
        if row.topic == SEND_TOPIC and (row.dedupe_key or "").startswith("send:")
    }


def _check_receipts(evidence: Evidence, invoices: dict[str, Invoice], report: Report) -> None:
    originals = _originals(evidence)
    rows_per_log = Counter(
        str(row.payload.get("message_log_id")) for row in evidence.outbox if row.topic == SEND_TOPIC
    )
    made: Counter[tuple[Any, str]] = Counter()
    for log in evidence.logs:
        if log.kind in ("receipt", "payment_received") and str(log.id) in originals:
            made[(log.invoice_id, log.kind)] += 1
            if rows_per_log[str(log.id)] != 1:
                report.fail(f"receipt message {log.id}: {rows_per_log[str(log.id)]} outbox rows")
    for flow in evidence.flows:
        invoice = invoices.get(flow.customer)
        if invoice is None:
            continue
        for kind, phone, read_as in (
            ("receipt", flow.customer, "receipt"),
            ("payment_received", flow.merchant, "merchant_receipt"),
        ):
            if made[(invoice.id, kind)] != 1:
                report.fail(
                    f"{invoice.number}: {kind} created {made[(invoice.id, kind)]} times",
                    invoice.number,
                )
            delivered = [
                m
                for m in evidence.inboxes[phone]
                if classify(m) == read_as
                and invoice.number in (m.get("text") or "")
                and m["status"] != "failed"
            ]
            if not delivered:
                got = [(classify(m), m["status"]) for m in evidence.inboxes[phone]]
                report.fail(
                    f"{invoice.number}: the {kind} never reached the phone; it got {got}",
                    invoice.number,
                )


def _check_deliveries(evidence: Evidence, report: Report) -> None:
    """A delivery the app never recorded is a copy it did not know it had sent."""
    recorded = {log.provider_message_id for log in evidence.logs if log.provider_message_id}
    after_timeout: Counter[str] = Counter()
    after_kill: Counter[str] = Counter()
    for phone, messages in evidence.inboxes.items():
        for message in messages:
            if message["wamid"] in recorded:
                continue
            what = classify(message)
            if message.get("fault") == "timeout_after":
                after_timeout[what] += 1
            elif _near_a_kill(message, evidence.worker_kills):
                after_kill[what] += 1
            else:
                report.fail(
                    f"…{phone[-3:]} got a {what} copy the app never recorded, with no injected "
                    "timeout and no worker kill near it: a double send (or a real provider "
                    "timeout on a stalled machine)"
                )
    report.lines.append(
        f"duplicate deliveries after a timeout-after-sending: {sum(after_timeout.values())} "
        f"{dict(after_timeout)}"
    )
    if evidence.worker_kills:
        report.lines.append(
            f"duplicate deliveries after a worker was killed mid-send: "
            f"{sum(after_kill.values())} {dict(after_kill)}"
        )
    resent = sum(
        1 for row in evidence.outbox if (row.dedupe_key or "").startswith("resend-as-template:")
    )
    report.lines.append(f"messages re-sent as templates after 131047: {resent}")


def _near_a_kill(message: dict[str, Any], kills: Sequence[datetime]) -> bool:
    """Killed between this send being taken and its answer being recorded (a few seconds)."""
    at = datetime.fromisoformat(message["at"])
    return any(at - timedelta(seconds=1) <= kill <= at + timedelta(seconds=10) for kill in kills)


def _check_outbox(evidence: Evidence, report: Report) -> None:
    statuses = Counter(row.status.value for row in evidence.outbox)
    report.lines.append(f"outbox rows by status: {dict(statuses)}")
    waits: dict[str, list[float]] = defaultdict(list)
    for row in evidence.outbox:
        if row.done_at is not None:
            waits[row.topic].append((row.done_at - row.created_at).total_seconds())
    for topic, seconds in sorted(waits.items()):
        seconds.sort()
        report.lines.append(
            f"  {topic}: {len(seconds)} rows, created → done median "
            f"{seconds[len(seconds) // 2]:.1f} s, p90 {seconds[len(seconds) * 9 // 10]:.1f} s, "
            f"max {seconds[-1]:.1f} s"
        )
    for row in evidence.outbox:
        if row.status is OutboxStatus.DEAD:
            report.fail(f"dead outbox row {row.topic} after {row.attempts}: {row.last_error}")
        elif row.status is not OutboxStatus.DONE:
            report.fail(f"outbox row {row.topic} still {row.status.value} ({row.last_error})")
