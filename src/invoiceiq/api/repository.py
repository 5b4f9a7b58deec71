"""API key and idempotency SQL."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.api.models import ApiKey, IdempotencyRecord
from invoiceiq.db.upsert import insert_if_absent


async def add_key(
    session: AsyncSession, *, merchant_id: uuid.UUID, prefix: str, key_hash: str
) -> ApiKey:
    key = ApiKey(merchant_id=merchant_id, prefix=prefix, key_hash=key_hash)
    session.add(key)
    await session.flush()
    return key


async def active_key(session: AsyncSession, key_hash: str) -> ApiKey | None:
    return await session.scalar(
        sa.select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    )


async def revoke_keys(session: AsyncSession, merchant_id: uuid.UUID, *, at: datetime) -> int:
    result = await session.execute(
        sa.update(ApiKey)
        .where(ApiKey.merchant_id == merchant_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=at)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def delete_expired_records(
    session: AsyncSession, merchant_id: uuid.UUID, *, now: datetime
) -> None:
    await session.execute(
        sa.delete(IdempotencyRecord)
        .where(IdempotencyRecord.merchant_id == merchant_id, IdempotencyRecord.expires_at < now)
        .execution_options(synchronize_session=False)
    )


async def claim_record(session: AsyncSession, values: dict[str, Any]) -> bool:
    """Insert the (merchant, key) record unless it exists; True when this request owns it.

    One statement: on PostgreSQL a second request with the same key waits here until the
    first commits (then finds its record) or rolls back (then inserts its own).
    """
    return await insert_if_absent(
        session, IdempotencyRecord, values, conflict_on=["merchant_id", "key"]
    )


async def get_record(
    session: AsyncSession, merchant_id: uuid.UUID, key: str
) -> IdempotencyRecord | None:
    return await session.scalar(
        sa.select(IdempotencyRecord)
        .where(IdempotencyRecord.merchant_id == merchant_id, IdempotencyRecord.key == key)
        .execution_options(populate_existing=True)
    )


async def set_response(
    session: AsyncSession, record_id: uuid.UUID, *, status: int, body: dict[str, Any]
) -> None:
    await session.execute(
        sa.update(IdempotencyRecord)
        .where(IdempotencyRecord.id == record_id)
        .values(response_status=status, response_body=body)
        .execution_options(synchronize_session=False)
    )
