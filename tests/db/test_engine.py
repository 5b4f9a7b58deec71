"""The engine every process uses: what a database error may carry to logs."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine


async def test_database_errors_leave_the_statements_values_out(engine: AsyncEngine) -> None:
    """Values hold message text and phone numbers; an error's text reaches logs and the
    outbox's last error (SQLAlchemy would otherwise append them)."""
    secret = "Logo design for 254712345678"
    async with engine.connect() as connection:
        with pytest.raises(sa.exc.DBAPIError) as caught:
            await connection.execute(sa.text("SELECT :text FROM no_such_table"), {"text": secret})
    assert "no_such_table" in str(caught.value)
    assert secret not in str(caught.value) and "254712345678" not in str(caught.value)
