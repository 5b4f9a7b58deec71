"""The `whatsapp.send` outbox handler: send one logged message, then record what happened.

Free-form inside the recipient's 24-hour window, the approved template outside it
(https://developers.facebook.com/docs/whatsapp/cloud-api/guides/send-messages#customer-service-windows);
a message with no template is not sent outside it, and is marked failed with WhatsApp's 131047.
A send is retried on transient and ambiguous failures (WhatsApp has no idempotency key, so a
rare duplicate is accepted). A rejected send, or one still failing at its last attempt, is
marked failed and its row goes dead (so `outbox list --dead` shows it and `outbox retry` can
send it again); for an invoice or reminder, the merchant is told once. So is a row whose last
run never finished (`abandoned`).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.config import Settings
from invoiceiq.db.engine import SessionFactory, single_statement_sessions
from invoiceiq.db.uow import unit_of_work
from invoiceiq.invoices.states import InvoiceStatus
from invoiceiq.kit.clock import utcnow
from invoiceiq.notifications import delivery, repository
from invoiceiq.notifications import service as notifications
from invoiceiq.notifications.models import DeliveryStatus
from invoiceiq.notifications.schemas import Outbound
from invoiceiq.outbox.repository import ClaimedRow
from invoiceiq.whatsapp.client import SentMessage, WhatsAppClient
from invoiceiq.whatsapp.errors import WhatsAppError
from invoiceiq.worker import GiveUp, Recorded, RetryLater, finish

log = logging.getLogger(__name__)
_SETTLED = frozenset({InvoiceStatus.CANCELLED.value, InvoiceStatus.PAID.value})
# Messages that offer to pay an invoice: not sent once it is cancelled or paid. (Receipts, and
# failures told after a payment, go out whatever the invoice's state.)
_WITH_PAY_BUTTON = frozenset({*delivery.INVOICE_KINDS, "invoice_copy"})


@dataclass(frozen=True)
class Plan:
    phone: str
    message: Outbound
    as_template: bool
    # Free-form, outside the recipient's 24-hour window, with no template to send instead:
    # WhatsApp would accept it and then fail it with 131047, so it is not sent at all.
    undeliverable: bool = False
    # An invoice or reminder whose invoice was cancelled or paid while it waited: its Pay
    # button could only confuse the customer.
    withdrawn: bool = False


class Sender:
    def __init__(
        self, *, sessions: SessionFactory, client: WhatsAppClient, settings: Settings
    ) -> None:
        self._sessions = sessions
        # The plan is one read: no BEGIN/COMMIT around it on PostgreSQL.
        self._statements = single_statement_sessions(sessions)
        self._client = client
        self._settings = settings

    async def __call__(self, row: ClaimedRow) -> Recorded | None:
        log_id = uuid.UUID(row.payload["message_log_id"])
        final = row.attempts >= self._settings.outbox_max_attempts
        try:
            plan = await self._plan(log_id, force_template=bool(row.payload.get("as_template")))
            if plan is None:
                return None  # already sent by an earlier run of this row
            if plan.withdrawn:
                await self._withdraw(log_id, plan.message.kind)
                return None
            if plan.undeliverable:
                log.info(
                    "whatsapp message not sent: outside the 24-hour window, no template",
                    extra={"kind": plan.message.kind},
                )
                await self._give_up(log_id, code=delivery.OUTSIDE_WINDOW, exhausted=False)
                return None
            sent = await self._send(plan)
        except WhatsAppError as error:
            if error.kind != "rejected" and not final:
                raise RetryLater(str(error)) from None
            log.warning("whatsapp send failed", extra={"kind": error.kind, "code": error.code})
            code = str(error.code) if error.code is not None else error.kind
            await self._give_up(log_id, code=code, exhausted=error.kind != "rejected")
            raise GiveUp(str(error)) from None
        except Exception:
            if final:  # a fault of ours, every time: the row goes dead, and that is told too
                await self._give_up(log_id, code="dead", exhausted=True)
            raise
        return await self._record_sent(row, log_id, plan, sent)

    async def abandoned(self, session: AsyncSession, payload: dict[str, Any]) -> None:
        """The row went dead with its last run unfinished (the worker killed mid-run, or the
        run past the handler timeout): as a fault of ours at the last attempt, unless an
        earlier run recorded the send. Whether the last run reached WhatsApp is unknown; the
        message is marked failed, and the merchant told."""
        log_id = uuid.UUID(payload["message_log_id"])
        entry = await repository.get(session, log_id)
        if entry is None or entry.provider_message_id is not None:
            return
        await delivery.record_failure(session, self._settings, log_id, code="dead", exhausted=True)

    async def _withdraw(self, log_id: uuid.UUID, kind: str) -> None:
        """Not sent, and nobody told: the merchant cancelled the invoice, or it was paid."""
        log.info("whatsapp message withdrawn: its invoice is settled", extra={"kind": kind})
        async with unit_of_work(self._sessions) as session:
            await repository.advance_status(
                session, log_id, DeliveryStatus.FAILED, at=utcnow(), error_code=delivery.WITHDRAWN
            )

    async def _give_up(self, log_id: uuid.UUID, *, code: str, exhausted: bool) -> None:
        """The message will not go: mark it failed (an invoice's merchant hears of it once)."""
        async with unit_of_work(self._sessions) as session:
            await delivery.record_failure(
                session, self._settings, log_id, code=code, exhausted=exhausted
            )

    async def _record_sent(
        self, row: ClaimedRow, log_id: uuid.UUID, plan: Plan, sent: SentMessage
    ) -> Recorded:
        template_name = (
            plan.message.template.name if plan.as_template and plan.message.template else None
        )
        async with unit_of_work(self._sessions) as session:
            accepted = await repository.record_sent(
                session,
                log_id,
                provider_id=sent.message_id,
                template_name=template_name,
                at=utcnow(),
            )
            await delivery.on_accepted(session, accepted)
            return await finish(session, row)

    async def _plan(self, log_id: uuid.UUID, *, force_template: bool) -> Plan | None:
        async with unit_of_work(self._statements) as session:
            entry = await repository.to_send(session, log_id)
        if entry is None or entry.provider_message_id is not None or entry.request is None:
            return None
        message = Outbound.from_json(entry.request)
        if message.kind in _WITH_PAY_BUTTON and entry.invoice_status in _SETTLED:
            return Plan(entry.phone, message, as_template=False, withdrawn=True)
        in_window = notifications.in_window(
            entry.last_inbound_at, window_seconds=self._settings.customer_window
        )
        if message.template is None:
            return Plan(entry.phone, message, as_template=False, undeliverable=not in_window)
        return Plan(entry.phone, message, as_template=force_template or not in_window)

    async def _send(self, plan: Plan) -> SentMessage:
        message = plan.message
        if plan.as_template and message.template is not None:
            return await self._client.send_template(
                to=plan.phone,
                name=message.template.name,
                language=message.template.language,
                body_params=tuple(template_param(p) for p in message.template.params),
                button_payloads=message.template.button_payloads,
            )
        if message.buttons:
            return await self._client.send_buttons(
                to=plan.phone, body=message.text, buttons=message.buttons, footer=message.footer
            )
        return await self._client.send_text(to=plan.phone, body=message.text)


def template_param(text: str) -> str:
    """WhatsApp refuses a template parameter that is empty or holds a newline, a tab or five
    spaces in a row; the free-form message keeps the text as typed, the template gets it on
    one line (e.g. a description given with line breaks through the API)."""
    return " ".join(text.split()) or "-"
