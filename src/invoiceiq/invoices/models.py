"""Invoice table."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from invoiceiq.db.base import Base, IdMixin, TimestampMixin
from invoiceiq.db.types import str_enum
from invoiceiq.invoices.states import InvoiceStatus


class Invoice(IdMixin, TimestampMixin, Base):
    __tablename__ = "invoice"
    __table_args__ = (
        sa.CheckConstraint("amount_cents > 0", name="amount_positive"),
        sa.Index(None, "merchant_id", "status", "created_at"),
        sa.Index(None, "customer_phone", "status"),
    )

    # INV + 7 Crockford base32 characters: a valid AccountReference (letters and digits only).
    number: Mapped[str] = mapped_column(sa.String(12), unique=True)
    # The secret in the public link; never the number, which customers see and type.
    public_token: Mapped[str] = mapped_column(sa.String(64), unique=True)
    merchant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("merchant.id", ondelete="CASCADE"))
    customer_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("customer.id", ondelete="SET NULL")
    )
    customer_phone: Mapped[str] = mapped_column(sa.String(15))
    customer_name: Mapped[str | None] = mapped_column(sa.String(80))
    amount_cents: Mapped[int] = mapped_column(sa.BigInteger)
    vat_cents: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    # The rate `vat_cents` was charged at (VAT_PERCENT then); null before it was kept.
    vat_percent: Mapped[int | None] = mapped_column(sa.SmallInteger)
    description: Mapped[str] = mapped_column(sa.String(120))
    status: Mapped[InvoiceStatus] = mapped_column(
        str_enum(InvoiceStatus, 16), default=InvoiceStatus.PENDING
    )
    sent_at: Mapped[datetime | None]
    paid_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    last_reminded_at: Mapped[datetime | None]
