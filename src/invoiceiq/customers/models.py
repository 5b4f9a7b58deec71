"""Customer table: a merchant's address book entry."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from invoiceiq.db.base import Base, IdMixin, TimestampMixin


class Customer(IdMixin, TimestampMixin, Base):
    __tablename__ = "customer"
    __table_args__ = (sa.UniqueConstraint("merchant_id", "phone"),)

    merchant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("merchant.id", ondelete="CASCADE"))
    phone: Mapped[str] = mapped_column(sa.String(15), index=True)
    name: Mapped[str | None] = mapped_column(sa.String(80))
    last_inbound_at: Mapped[datetime | None]
    opted_out_at: Mapped[datetime | None]
