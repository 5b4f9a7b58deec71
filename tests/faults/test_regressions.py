"""What the fault runs found, pinned down by small deterministic tests.

- A status about a copy we never knew we sent ends quietly, not as a dead outbox row. After a
  timeout after sending, the send is retried and a second copy goes out; WhatsApp reports
  statuses for both, but only the second one's wamid is ever recorded. Those first-copy
  statuses went dead; they are now retried for a while and then dropped, one attempt before
  the last (a worker killed during the last attempt would make the row dead).
- Tests and operators can shrink the provider timeout and the outbox backoff like every other
  duration (DESIGN §2), so a fault run is not dominated by 15 s timeouts and 10 min backoffs.
"""

from __future__ import annotations

import asyncio

from invoiceiq.db.engine import make_engine, make_session_factory
from invoiceiq.db.models import InboxEvent, OutboxMessage
from invoiceiq.handlers import worker_options
from invoiceiq.outbox.states import OutboxStatus
from invoiceiq.providers import make_providers
from support.app_server import rows, running_app
from support.db import make_settings

SECRET_HEADERS = {"X-Webhook-Secret": "dev-webhook-secret"}
NEVER_RECORDED = "wamid.LOSTANSWER0001"


def status_envelope(wamid: str, status: str) -> dict[str, object]:
    update = {
        "id": wamid,
        "status": status,
        "timestamp": "1700000000",
        "recipient_id": "254711000001",
    }
    value = {"messaging_product": "whatsapp", "statuses": [update]}
    return {"object": "whatsapp_business_account", "entry": [{"changes": [{"value": value}]}]}


async def test_a_status_of_an_unrecorded_copy_ends_done(database_url: str) -> None:
    async with running_app(database_url, outbox_max_attempts=3) as app:
        for status in ("sent", "delivered"):
            response = await app.http.post(
                "/whatsapp/webhook",
                json=status_envelope(NEVER_RECORDED, status),
                headers=SECRET_HEADERS,
            )
            assert response.status_code == 200
        async with asyncio.timeout(30):
            while True:
                queued = await rows(
                    database_url, OutboxMessage, OutboxMessage.topic == "whatsapp.status"
                )
                over = (OutboxStatus.DONE, OutboxStatus.DEAD)
                if len(queued) == 2 and all(r.status in over for r in queued):
                    break
                await asyncio.sleep(0.2)
    assert [(r.status, r.attempts) for r in queued] == [(OutboxStatus.DONE, 2)] * 2
    kept = await rows(database_url, InboxEvent, InboxEvent.external_id.startswith(NEVER_RECORDED))
    assert len(kept) == 2  # the statuses stay on record


async def test_the_provider_timeout_and_the_backoff_cap_are_settings() -> None:
    settings = make_settings(provider_timeout=2.5, outbox_backoff_max=8)
    engine = make_engine(settings.database_url)
    providers = make_providers(
        settings, local_origin="http://127.0.0.1:1", sessions=make_session_factory(engine)
    )
    try:
        assert providers.http.timeout.read == 2.5
    finally:
        await providers.aclose()
        await engine.dispose()
    assert worker_options(settings).backoff_max == 8
