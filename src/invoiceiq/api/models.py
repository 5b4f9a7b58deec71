"""API keys (stored hashed) and the Idempotency-Key records of the create endpoint."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from invoiceiq.db.base import Base, IdMixin, TimestampMixin
from invoiceiq.db.types import JSONType


class ApiKey(IdMixin, TimestampMixin, Base):
    __tablename__ = "api_key"

    merchant_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("merchant.id", ondelete="CASCADE"), index=True
    )
    # The key's first characters, safe to show an operator ("which key is this?").
    prefix: Mapped[str] = mapped_column(sa.String(16))
    # SHA-256 of the whole key: the key has 256 random bits, so a slow hash adds nothing, and a
    # unique digest makes the lookup one indexed equality.
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    revoked_at: Mapped[datetime | None]


class IdempotencyRecord(IdMixin, TimestampMixin, Base):
    __tablename__ = "idempotency_record"
    __table_args__ = (sa.UniqueConstraint("merchant_id", "key"),)

    merchant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("merchant.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(sa.String(255))
    # SHA-256 of the validated request body: the same key with another body is a 409.
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    response_status: Mapped[int | None]
    response_body: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    expires_at: Mapped[datetime] = mapped_column(index=True)
