"""Message log: every message in and out, with its delivery status."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from invoiceiq.db.base import Base, IdMixin, TimestampMixin
from invoiceiq.db.types import JSONType, str_enum


class Direction(StrEnum):
    INBOUND = "in"
    OUTBOUND = "out"


class DeliveryStatus(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"


class MessageLog(IdMixin, TimestampMixin, Base):
    __tablename__ = "message_log"
    __table_args__ = (sa.Index(None, "phone", "created_at"),)

    direction: Mapped[Direction] = mapped_column(str_enum(Direction, 8))
    kind: Mapped[str] = mapped_column(sa.String(32))
    phone: Mapped[str] = mapped_column(sa.String(15))
    provider_message_id: Mapped[str | None] = mapped_column(sa.String(128), unique=True)
    status: Mapped[DeliveryStatus] = mapped_column(
        str_enum(DeliveryStatus, 16), default=DeliveryStatus.QUEUED
    )
    error_code: Mapped[str | None] = mapped_column(sa.String(32))
    template_name: Mapped[str | None] = mapped_column(sa.String(64))
    invoice_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("invoice.id", ondelete="SET NULL"), index=True
    )
    # What was asked to be sent (kept so a 131047 failure can be re-sent as its template).
    request: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    status_at: Mapped[datetime | None]
