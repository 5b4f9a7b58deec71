"""Merchant table."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from invoiceiq.db.base import Base, IdMixin, TimestampMixin
from invoiceiq.db.types import str_enum
from invoiceiq.merchants.states import MerchantStatus


class Merchant(IdMixin, TimestampMixin, Base):
    __tablename__ = "merchant"

    phone: Mapped[str] = mapped_column(sa.String(15), unique=True)
    business_name: Mapped[str | None] = mapped_column(sa.String(80))
    # Under approval, a new name an approved merchant asked for: shown to no one until
    # `merchant approve` makes it the business name.
    pending_business_name: Mapped[str | None] = mapped_column(sa.String(80))
    status: Mapped[MerchantStatus] = mapped_column(
        str_enum(MerchantStatus), default=MerchantStatus.ACTIVE
    )
    vat_enabled: Mapped[bool] = mapped_column(default=True)
