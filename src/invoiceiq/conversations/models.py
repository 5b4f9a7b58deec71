"""Conversation table: one guided flow per merchant."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from invoiceiq.db.base import Base, IdMixin, TimestampMixin
from invoiceiq.db.types import JSONType


class Conversation(IdMixin, TimestampMixin, Base):
    __tablename__ = "conversation"

    merchant_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("merchant.id", ondelete="CASCADE"), unique=True
    )
    step: Mapped[str] = mapped_column(sa.String(32))
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    expires_at: Mapped[datetime]
