"""Inbox table: inbound provider events, unique by (source, external id)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from invoiceiq.db.base import Base, IdMixin
from invoiceiq.db.types import JSONType
from invoiceiq.kit.clock import utcnow


class InboxEvent(IdMixin, Base):
    __tablename__ = "inbox_event"
    __table_args__ = (sa.UniqueConstraint("source", "external_id"),)

    source: Mapped[str] = mapped_column(sa.String(32))
    external_id: Mapped[str] = mapped_column(sa.String(255))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(sa.Text)
