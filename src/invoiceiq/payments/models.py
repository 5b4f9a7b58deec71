"""Payment table: one M-PESA attempt against an invoice."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped, mapped_column

from invoiceiq.db.base import Base, IdMixin, TimestampMixin
from invoiceiq.db.types import JSONType, str_enum
from invoiceiq.payments.states import PaymentStatus

_ONE_OPEN = sa.text("status = 'INITIATED'")


class Payment(IdMixin, TimestampMixin, Base):
    __tablename__ = "payment"
    __table_args__ = (
        sa.CheckConstraint("amount_cents > 0", name="amount_positive"),
        # At most one open attempt per invoice, enforced by the database, so simultaneous taps
        # cannot both start one (a read-then-insert check can).
        sa.Index(
            "uq_payment_one_initiated_per_invoice",
            "invoice_id",
            unique=True,
            sqlite_where=_ONE_OPEN,
            postgresql_where=_ONE_OPEN,
        ),
        sa.Index(None, "phone", "amount_cents", "push_sent_at"),
        sa.Index(None, "status", "push_sent_at"),
    )

    invoice_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("invoice.id", ondelete="RESTRICT"), index=True
    )
    phone: Mapped[str] = mapped_column(sa.String(15))
    amount_cents: Mapped[int] = mapped_column(sa.BigInteger)
    status: Mapped[PaymentStatus] = mapped_column(
        str_enum(PaymentStatus, 16), default=PaymentStatus.INITIATED
    )
    checkout_request_id: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    merchant_request_id: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    receipt_number: Mapped[str | None] = mapped_column(sa.String(32), unique=True)
    result_code: Mapped[str | None] = mapped_column(sa.String(32))
    result_desc: Mapped[str | None] = mapped_column(sa.String(255))
    # Recorded (and committed) before Daraja is called: a re-run that finds it set never pushes.
    push_sent_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    confirmed_by: Mapped[str | None] = mapped_column(sa.String(16))
    needs_review: Mapped[bool] = mapped_column(default=False, index=True)
    review_reason: Mapped[str | None] = mapped_column(sa.String(255))
    reviewed_at: Mapped[datetime | None]
    review_note: Mapped[str | None] = mapped_column(sa.Text)
    # Wire bodies kept for audit, the Daraja password removed.
    request_body: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    callback_body: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    @hybrid_property
    def started_at(self) -> datetime:
        """Where the attempt's clock starts: the push, or its creation if none was sent (in SQL
        too, for the queries that order or filter by it)."""
        return self.push_sent_at or self.created_at

    @started_at.inplace.expression
    @classmethod
    def _started_at_expression(cls) -> sa.ColumnElement[datetime]:
        return sa.func.coalesce(cls.push_sent_at, cls.created_at)

    @property
    def under_review(self) -> bool:
        """Flagged for review, and no person has closed that review yet."""
        return self.needs_review and self.reviewed_at is None
