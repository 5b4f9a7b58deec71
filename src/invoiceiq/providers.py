"""The provider clients of one process, built once from settings (STYLE §7: wired in one place)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from invoiceiq.config import Settings
from invoiceiq.db.engine import SessionFactory
from invoiceiq.kit.http import Timeouts, make_http_client
from invoiceiq.mpesa.client import DarajaClient
from invoiceiq.mpesa.token_store import DatabaseTokenStore
from invoiceiq.whatsapp.client import WhatsAppClient


@dataclass
class Providers:
    http: httpx.AsyncClient
    whatsapp: WhatsAppClient
    daraja: DarajaClient

    async def aclose(self) -> None:
        await self.http.aclose()


def make_providers(settings: Settings, *, local_origin: str, sessions: SessionFactory) -> Providers:
    """`local_origin` is where this process's own server listens: the in-process simulator's
    address when provider URLs are left unset (DESIGN §2). The Daraja token lives in the
    database, shared by every process (DESIGN §4)."""
    http = make_http_client(Timeouts(read=settings.provider_timeout))
    whatsapp = WhatsAppClient(
        settings.whatsapp_url(local_origin), settings.whatsapp_api_key.get_secret_value(), http
    )
    daraja = DarajaClient(
        base_url=settings.daraja_url(local_origin),
        consumer_key=settings.mpesa_consumer_key.get_secret_value(),
        consumer_secret=settings.mpesa_consumer_secret.get_secret_value(),
        shortcode=settings.mpesa_shortcode,
        passkey=settings.mpesa_passkey.get_secret_value(),
        transaction_type=settings.mpesa_transaction_type.value,
        party_b=settings.party_b,
        http=http,
        tokens=DatabaseTokenStore(sessions),
    )
    return Providers(http=http, whatsapp=whatsapp, daraja=daraja)
