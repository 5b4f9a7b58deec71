"""The provider clients of one process, built once from settings (STYLE §7: wired in one place)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from invoiceiq.config import Settings
from invoiceiq.kit.http import make_http_client
from invoiceiq.whatsapp.client import WhatsAppClient


@dataclass
class Providers:
    http: httpx.AsyncClient
    whatsapp: WhatsAppClient

    async def aclose(self) -> None:
        await self.http.aclose()


def make_providers(settings: Settings, *, local_origin: str) -> Providers:
    """`local_origin` is where this process's own server listens: the in-process simulator's
    address when provider URLs are left unset (DESIGN §2)."""
    http = make_http_client()
    whatsapp = WhatsAppClient(
        settings.whatsapp_url(local_origin), settings.whatsapp_api_key.get_secret_value(), http
    )
    return Providers(http=http, whatsapp=whatsapp)
