"""Rate-limit counters, in the database so every web process shares them (DESIGN §1, §7)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from invoiceiq.db.base import Base


class RateLimitCounter(Base):
    """One fixed window per key: `count` hits in window number `window_index` (epoch // length)."""

    __tablename__ = "rate_limit_counter"

    # "<limit name>:<digest of the subject>", e.g. the pay limit of one client address.
    key: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    window_index: Mapped[int] = mapped_column(sa.BigInteger)
    count: Mapped[int]
    # When the current window ends: rows past it are deleted as new hits come in.
    expires_at: Mapped[datetime] = mapped_column(index=True)
