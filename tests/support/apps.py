"""The app in-process over httpx (no worker, no sockets), and merchants with API keys."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from invoiceiq.api import service as api_service
from invoiceiq.config import Settings
from invoiceiq.db.engine import SessionFactory
from invoiceiq.main import create_app
from invoiceiq.merchants.models import Merchant
from support import factories


@asynccontextmanager
async def in_process(
    settings: Settings, *, client: tuple[str, int] = ("127.0.0.1", 50000)
) -> AsyncIterator[httpx.AsyncClient]:
    """The whole app (its lifespan too) without a server or a worker; `client` is the peer."""
    app = create_app(settings, run_worker=False)
    async with app.router.lifespan_context(app):
        yield client_for(app, client=client)


def client_for(
    app: FastAPI, *, client: tuple[str, int] = ("127.0.0.1", 50000)
) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=client)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def merchant_with_key(sessions: SessionFactory, **values: Any) -> tuple[Merchant, str]:
    """A named, active merchant and a fresh API key of theirs (committed)."""
    async with sessions() as session, session.begin():
        merchant = await factories.merchant(session, **values)
        _, key = await api_service.create_api_key(session, phone=merchant.phone)
    return merchant, key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
