"""Conversation SQL."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from invoiceiq.conversations.models import Conversation


async def get_for_merchant(session: AsyncSession, merchant_id: uuid.UUID) -> Conversation | None:
    return await session.scalar(
        sa.select(Conversation).where(Conversation.merchant_id == merchant_id)
    )


async def replace(
    session: AsyncSession,
    *,
    merchant_id: uuid.UUID,
    step: str,
    data: dict[str, Any],
    expires_at: datetime,
) -> Conversation:
    """A new flow, with a new id, instead of any previous one (so old buttons go stale)."""
    await delete_for_merchant(session, merchant_id)
    conversation = Conversation(
        merchant_id=merchant_id, step=step, data=data, expires_at=expires_at
    )
    session.add(conversation)
    await session.flush()
    return conversation


async def save(
    session: AsyncSession,
    conversation_id: uuid.UUID,
    *,
    step: str,
    data: dict[str, Any],
    expires_at: datetime,
) -> None:
    await session.execute(
        sa.update(Conversation)
        .where(Conversation.id == conversation_id)
        .values(step=step, data=data, expires_at=expires_at)
        .execution_options(synchronize_session="fetch")
    )


async def extend(
    session: AsyncSession, conversation_id: uuid.UUID, *, expires_at: datetime
) -> None:
    await session.execute(
        sa.update(Conversation)
        .where(Conversation.id == conversation_id)
        .values(expires_at=expires_at)
        .execution_options(synchronize_session="fetch")
    )


async def delete(session: AsyncSession, conversation_id: uuid.UUID) -> bool:
    result = await session.execute(
        sa.delete(Conversation)
        .where(Conversation.id == conversation_id)
        .execution_options(synchronize_session="fetch")
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def delete_for_merchant(session: AsyncSession, merchant_id: uuid.UUID) -> None:
    await session.execute(
        sa.delete(Conversation)
        .where(Conversation.merchant_id == merchant_id)
        .execution_options(synchronize_session="fetch")
    )
