"""Outbox table: side effects waiting for a worker."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from invoiceiq.db.base import Base, IdMixin, TimestampMixin
from invoiceiq.db.types import JSONType, str_enum
from invoiceiq.kit.clock import utcnow
from invoiceiq.outbox.states import OutboxStatus


class OutboxMessage(IdMixin, TimestampMixin, Base):
    __tablename__ = "outbox_message"
    __table_args__ = (
        sa.Index(None, "status", "available_at"),
        sa.Index(None, "ordering_key", "created_at"),
    )

    topic: Mapped[str] = mapped_column(sa.String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # What makes this side effect unique (an invoice, an attempt, a message): a second enqueue of
    # the same effect is a no-op. Null when the effect has no natural key.
    dedupe_key: Mapped[str | None] = mapped_column(sa.String(255), unique=True)
    # Rows with the same key (e.g. one recipient's messages) are performed one at a time, in
    # the order they were written, so a chat reads in order. Null: no ordering.
    ordering_key: Mapped[str | None] = mapped_column(sa.String(64))
    status: Mapped[OutboxStatus] = mapped_column(
        str_enum(OutboxStatus, 16), default=OutboxStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(default=0)
    available_at: Mapped[datetime] = mapped_column(default=utcnow)
    locked_until: Mapped[datetime | None]
    # A fresh token per claim: only the claimant may record the outcome.
    claim_token: Mapped[str | None] = mapped_column(sa.String(64))
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    done_at: Mapped[datetime | None]
