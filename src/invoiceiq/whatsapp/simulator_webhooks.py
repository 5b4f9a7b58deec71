"""What the fake 360dialog API posts to the app: Cloud API webhook envelopes for a phone's own
messages and for the statuses of what the business sent, retried as 360dialog retries them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import httpx

from invoiceiq.kit.clock import utcnow
from invoiceiq.simulator.config import SimulatorSettings
from invoiceiq.whatsapp.errors import REENGAGEMENT_REQUIRED

# The fake's logs keep one logger name, whichever of its modules writes them.
logger = logging.getLogger("invoiceiq.whatsapp.simulator")

# The simulated business number, as WhatsApp names it in webhooks.
BUSINESS_NUMBER = "254700000000"
PHONE_NUMBER_ID = "100000000000001"
WABA_ID = "200000000000001"
# 360dialog counts a webhook as failed when the answer takes over 5 s.
# https://docs.360dialog.com/partner/messaging/sending-and-receiving-messages/receiving-messages-via-webhook
WEBHOOK_TIMEOUT = httpx.Timeout(5.0)
NO_ANSWER = 0  # phone_writes' status when the app could not be reached at all
_REENGAGEMENT_ERROR: dict[str, Any] = {
    "code": REENGAGEMENT_REQUIRED,
    "title": "Re-engagement message",
    "message": "Re-engagement message",
    "error_data": {
        "details": "Message failed to send because more than 24 hours have passed since the "
        "customer last replied to this number."
    },
    "href": "https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes/",
}


def message_envelope(msisdn: str, message: dict[str, Any]) -> dict[str, Any]:
    """The webhook for a message the phone wrote, its sender named as a contact."""
    contact: dict[str, Any] = {"profile": {"name": f"Phone {msisdn[-4:]}"}}
    if "from" in message:
        contact["wa_id"] = message["from"]
    else:
        contact["user_id"] = message.get("from_user_id")
    return _envelope({"contacts": [contact], "messages": [message]})


def status_envelope(wamid: str, msisdn: str, name: str, *, template: bool) -> dict[str, Any]:
    """The webhook for one status of a message the business sent (a template or not)."""
    status: dict[str, Any] = {
        "id": wamid,
        "status": name,
        "timestamp": str(int(utcnow().timestamp())),
        "recipient_id": msisdn,
    }
    if name == "failed":
        status["errors"] = [dict(_REENGAGEMENT_ERROR)]
    else:
        category = "utility" if template else "service"
        status["pricing"] = {"billable": False, "pricing_model": "PMP", "category": category}
    return _envelope({"statuses": [status]})


def _envelope(value: dict[str, Any]) -> dict[str, Any]:
    """The Cloud API webhook envelope around one change's value."""
    metadata = {"display_phone_number": BUSINESS_NUMBER, "phone_number_id": PHONE_NUMBER_ID}
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": WABA_ID,
                "changes": [
                    {
                        "field": "messages",
                        "value": {"messaging_product": "whatsapp", "metadata": metadata, **value},
                    }
                ],
            }
        ],
    }


class WebhookSender:
    """Posts to the webhook registered with `POST /v1/configs/webhook`; statuses in the
    background, each sent again for `webhook_retry_s` while the app does not take it."""

    def __init__(self, settings: SimulatorSettings, http: httpx.AsyncClient) -> None:
        self._settings = settings
        self._http = http
        self._url: str | None = None
        self._headers: dict[str, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def register(self, url: str, headers: Mapping[str, str]) -> None:
        self._url = url
        self._headers = dict(headers)

    @property
    def url(self) -> str | None:
        return self._url

    async def post(self, envelope: dict[str, Any]) -> int:
        """The app's HTTP status, or NO_ANSWER when it could not be reached."""
        url = self._url
        if url is None:
            return NO_ANSWER
        try:
            response = await self._http.post(
                url, json=envelope, headers=self._headers, timeout=WEBHOOK_TIMEOUT
            )
        except httpx.HTTPError as error:
            logger.info("simulator webhook not delivered: %s", type(error).__name__)
            return NO_ANSWER
        return response.status_code

    def post_statuses(
        self, names: list[str], envelope_for: Callable[[str], dict[str, Any]]
    ) -> None:
        """Posts these statuses in order, `status_delay_ms` apart, in the background;
        `envelope_for(name)` builds each one when its time comes."""
        dice, chance = self._settings.dice, self._settings.config.faults.webhooks.duplicate
        plan = [(name, dice.roll(chance)) for name in names]  # rolled now, in request order
        delay = self._settings.config.status_delay_ms / 1000
        self._spawn(self._deliver(plan, delay, envelope_for))

    def cancel_pending(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _deliver(
        self,
        plan: list[tuple[str, bool]],
        delay: float,
        envelope_for: Callable[[str], dict[str, Any]],
    ) -> None:
        for name, duplicate in plan:
            await asyncio.sleep(delay)
            envelope = envelope_for(name)
            for _ in range(2 if duplicate else 1):
                await self._post_until_taken(envelope)

    async def _post_until_taken(self, envelope: dict[str, Any]) -> None:
        """Post again while the app does not take it, for `webhook_retry_s`; later statuses of
        the message wait behind (reference/whatsapp-360dialog.md §3.6)."""
        deadline = asyncio.get_running_loop().time() + self._settings.config.webhook_retry_s
        pause = 0.2
        while not 200 <= await self.post(envelope) < 300:
            if asyncio.get_running_loop().time() + pause > deadline:
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
