"""Operator commands for the outbox: list its rows (masked) and revive a dead one (DESIGN §1).

A row goes dead when its handler failed `OUTBOX_MAX_ATTEMPTS` times, was rejected for good, or had
no handler. `retry` puts it back in the queue once the cause is fixed, except an STK push: the
push may already have raised a PIN prompt (or been paid), Daraja has no idempotency key, and a
second push could charge the customer twice, so that attempt is settled by STK Query instead.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.admin_cli import _run_admin, in_transaction
from invoiceiq.config import Settings
from invoiceiq.errors import AppError
from invoiceiq.invoices import repository as invoice_repository
from invoiceiq.kit.clock import nairobi, utcnow
from invoiceiq.kit.phone import mask_msisdn, mask_phones_in_text
from invoiceiq.outbox import repository
from invoiceiq.outbox.models import OutboxMessage
from invoiceiq.outbox.states import OutboxStatus
from invoiceiq.payments import repository as payment_repository
from invoiceiq.payments.service import PUSH_TOPIC

# Payload keys shown: ids, counters and codes. Every other key (message text, button ids, raw
# bodies) is left out, and phone numbers are shown masked.
SHOWN_KEYS = (
    "payment_id",
    "message_log_id",
    "as_template",
    "kind",
    "status",
    "error_code",
    "round",
)
# A wamid is base64 that spells out the recipient's number: only its random tail is shown.
WAMID_KEYS = ("wamid", "message_id")
WAMID_TAIL = 12
# CheckoutRequestID (`ws_CO_…712345678`, with `:ResultCode` in inbox keys) ends with the payer's
# national number.
CHECKOUT_KEYS = ("external_id",)
_TRAILING_NUMBER = re.compile(r"\d{6}(\d{3})(?=:|$)")
PHONE_KEYS = ("phone", "to", "from")
ERROR_WIDTH = 200

outbox_app = typer.Typer(
    help="The outbox: side effects waiting for a worker, or given up on.", no_args_is_help=True
)


@outbox_app.command("list")
def list_rows(
    dead: Annotated[bool, typer.Option("--dead", help="Only the rows given up on.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many rows, newest first.")] = 50,
) -> None:
    """Show outbox rows, newest first, with payloads reduced to ids and masked numbers."""
    status = OutboxStatus.DEAD if dead else None

    async def work(settings: Settings) -> str:
        async def read(session: AsyncSession) -> str:
            counts = await repository.count_by_status(session)
            rows = await repository.list_rows(session, status=status, limit=limit)
            return render(counts, rows, dead=dead)

        return await in_transaction(settings, read)

    _run_admin(work)


@outbox_app.command("retry")
def retry(
    row_id: Annotated[str, typer.Argument(help="The row's id, from `outbox list --dead`.")],
) -> None:
    """Put a dead row back in the queue (never an STK push: use `payments query` for those)."""
    target = _parse_id(row_id)

    async def work(settings: Settings) -> str:
        return await in_transaction(settings, lambda session: revive(session, target))

    _run_admin(work)


async def revive(session: AsyncSession, row_id: uuid.UUID) -> str:
    """Revive one dead row; otherwise an AppError says why, and nothing is written."""
    row = await repository.get(session, row_id)
    if row is None:
        raise AppError(f"No outbox row {row_id}. `invoiceiq outbox list --dead` lists the dead.")
    if row.status is not OutboxStatus.DEAD:
        raise AppError(f"Outbox row {row_id} is {row.status.value}, not dead: nothing to retry.")
    if row.topic == PUSH_TOPIC:
        raise AppError(await _refusal_for_push(session, row))
    if not await repository.revive(session, row_id, now=utcnow()):
        raise AppError(f"Outbox row {row_id} changed while we looked; list it again.")
    return f"revived {row_id} ({row.topic}): a worker performs it shortly"


async def _refusal_for_push(session: AsyncSession, row: OutboxMessage) -> str:
    payment_id = row.payload.get("payment_id")
    number = await _invoice_number(session, payment_id) or "INVOICE_NUMBER"
    return (
        f"Refused: outbox row {row.id} is an M-PESA STK push (payment {payment_id}, "
        f"invoice {number}).\n"
        "A push that died may already have raised a PIN prompt on the customer's phone, or even "
        "been paid; Daraja has no idempotency key, so pushing again could charge twice.\n"
        f"Settle the attempt instead: `invoiceiq payments query {number}` asks M-PESA what "
        "happened and applies the answer (paid, or failed so the customer can tap Pay again)."
    )


async def _invoice_number(session: AsyncSession, payment_id: Any) -> str | None:
    try:
        payment = await payment_repository.get(session, uuid.UUID(str(payment_id)))
    except ValueError:
        return None
    if payment is None or payment.invoice_id is None:
        return None
    invoice = await invoice_repository.get(session, payment.invoice_id)
    return invoice.number if invoice else None


def _parse_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw.strip())
    except ValueError:
        typer.echo(
            f"{raw!r} is not an outbox row id (a UUID, as `invoiceiq outbox list` shows it).",
            err=True,
        )
        raise typer.Exit(code=2) from None


# Rendering ------------------------------------------------------------------------------------


def render(counts: dict[OutboxStatus, int], rows: list[OutboxMessage], *, dead: bool) -> str:
    summary = ", ".join(f"{counts[status]} {status.value}" for status in OutboxStatus)
    lines = [f"outbox: {summary}"]
    if not rows:
        lines.append("no dead rows" if dead else "no rows")
        return "\n".join(lines)
    lines.append(
        f"{'ID':36}  {'TOPIC':22} {'STATUS':8} {'TRIES':>5}  {'UPDATED (EAT)':16}  DETAILS"
    )
    for row in rows:
        updated = nairobi(row.updated_at).strftime("%Y-%m-%d %H:%M")
        lines.append(
            f"{row.id!s:36}  {row.topic:22} {row.status.value:8} {row.attempts:>5}  "
            f"{updated:16}  {describe_payload(row.payload)}"
        )
        # A row done after a retry keeps the error of its failed try: noise once it succeeded.
        if row.last_error and row.status is not OutboxStatus.DONE:
            lines.append(f"    last error: {describe_error(row.last_error)}")
    return "\n".join(lines)


def describe_payload(payload: dict[str, Any]) -> str:
    """The payload's ids and codes, phone numbers masked; never message text."""
    present = {key: value for key, value in payload.items() if value is not None}
    parts = [f"{key}={_plain(present[key])}" for key in SHOWN_KEYS if key in present]
    parts += [f"{key}={_wamid_tail(str(present[key]))}" for key in WAMID_KEYS if key in present]
    parts += [
        f"{key}={_mask_checkout(_plain(present[key]))}" for key in CHECKOUT_KEYS if key in present
    ]
    parts += [
        f"{key}={mask_msisdn(str(present[key]))}"
        for key in PHONE_KEYS
        if isinstance(present.get(key), str | int)
    ]
    return " ".join(parts) or "-"


def _mask_checkout(checkout_id: str) -> str:
    return _TRAILING_NUMBER.sub(lambda match: "••••••" + match.group(1), checkout_id)


def _wamid_tail(wamid: str) -> str:
    return wamid if len(wamid) <= WAMID_TAIL else "…" + wamid[-WAMID_TAIL:]


def describe_error(error: str) -> str:
    one_line = " ".join(error.split())
    shown = mask_phones_in_text(one_line)
    return shown if len(shown) <= ERROR_WIDTH else shown[: ERROR_WIDTH - 1] + "…"


def _plain(value: Any) -> str:
    return mask_phones_in_text(" ".join(str(value).split()))
