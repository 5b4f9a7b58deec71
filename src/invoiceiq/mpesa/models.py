"""Provider token table: the Daraja OAuth token shared by every process."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from invoiceiq.db.base import Base
from invoiceiq.kit.clock import utcnow


class ProviderToken(Base):
    __tablename__ = "provider_token"

    # One row per provider credential (e.g. "daraja"); the row is also the refresh lock.
    name: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    token: Mapped[str | None] = mapped_column(sa.Text)
    expires_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
