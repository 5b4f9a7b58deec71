"""Cloud API webhook bodies built by hand, and posting them to the app as 360dialog would.

The simulator posts well-formed webhooks for phones; these helpers are for what it would never
send on its own: a replayed POST, a batch of several senders, a status we choose, bad bodies.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from support.app_server import RunningApp

SECRET = "dev-webhook-secret"  # the development default of WHATSAPP_WEBHOOK_SECRET
SECRET_HEADERS = {"X-Webhook-Secret": SECRET}
PATH = "/whatsapp/webhook"


def new_wamid() -> str:
    return "wamid.TEST" + secrets.token_hex(16).upper()


def now_stamp() -> str:
    return str(int(time.time()))


def text_message(sender: str, body: str, *, wamid: str | None = None) -> dict[str, Any]:
    return {
        "from": sender,
        "id": wamid or new_wamid(),
        "timestamp": now_stamp(),
        "type": "text",
        "text": {"body": body},
    }


def status(
    wamid: str, name: str, *, recipient: str, error_code: int | None = None
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": wamid,
        "status": name,
        "timestamp": now_stamp(),
        "recipient_id": recipient,
    }
    if error_code is not None:
        item["errors"] = [{"code": error_code, "title": "Message undeliverable"}]
    return item


def envelope(
    *,
    messages: Iterable[Mapping[str, Any]] = (),
    statuses: Iterable[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """One entry, one change: the Cloud API shape, with a contact for each message's sender."""
    messages = [dict(m) for m in messages]
    senders = dict.fromkeys(m["from"] for m in messages if "from" in m)
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "254700000000", "phone_number_id": "1"},
        "contacts": [{"profile": {"name": "Tester"}, "wa_id": s} for s in senders],
        "messages": messages,
        "statuses": [dict(s) for s in statuses],
    }
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "2", "changes": [{"field": "messages", "value": value}]}],
    }


def signature(body: bytes, app_secret: str) -> str:
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


async def post(
    app: RunningApp,
    document: Mapping[str, Any] | bytes,
    *,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """POST a webhook body (a document is JSON-encoded) with the right secret unless told."""
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    sent = dict(SECRET_HEADERS if headers is None else headers)
    sent.setdefault("Content-Type", "application/json")
    return await app.http.post(PATH, content=body, headers=sent)
