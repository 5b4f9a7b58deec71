"""Merchants and customers of a fault run, acting as people do through the simulator.

A merchant names the business and sends a one-line invoice. A customer waits for the invoice,
taps Pay, and keeps going until paid: after a failure they wait out the cooldown and tap again,
when asked to wait they wait, and when nothing happens for a while they tap again anyway.

Every message a phone writes is delivered as 360dialog delivers webhooks: the same wamid is
posted again until the app answers 200, so an app that is down (killed) or failing loses
nothing and handles each message once (its inbox deduplicates by wamid).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

Message = dict[str, Any]
PAY_TITLE = "Pay with M-PESA"
# What customers answer on the PIN prompt before they finally enter the right PIN, in turn.
HESITATIONS: tuple[tuple[str, ...], ...] = (
    (),
    ("cancel",),
    ("timeout",),
    ("wrong_pin",),
    ("cancel", "wrong_pin"),
    ("timeout", "cancel"),
    ("wrong_pin", "timeout"),
)
# "Please wait 88 seconds, then tap Pay again", "Then, or in 40 seconds, tap Pay again", and
# "We are still checking with M-PESA…" (no time: the outcome's own message will come).
_WAIT = re.compile(r"(?:wait|in) (\d+) seconds")
_CHECKING = "still checking with M-PESA"
_TEMPLATES = {
    "payment_receipt": "receipt",
    "merchant_payment_received": "merchant_receipt",
    "payment_failed": "failed",
    "payment_unconfirmed": "unconfirmed",
    "invoice_new": "invoice",
    "invoice_reminder": "invoice",
}
_wamids = itertools.count(1)


class SimulatorControl:
    """The simulator's control API (DESIGN §8) through `http`, whose base URL serves /simulator."""

    def __init__(self, http: httpx.AsyncClient, *, redeliver_for: float = 90.0) -> None:
        self.http = http
        self.redeliver_for = redeliver_for
        self.undelivered_posts = 0  # webhook posts the app did not answer with 200

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.http.request(method, f"/simulator{path}", **kwargs)
        response.raise_for_status()
        return response.json()

    async def read(self, path: str, **kwargs: Any) -> Any:
        """A GET, asked again when a kept-alive connection was closed under it."""
        for attempt in range(5):
            try:
                return await self.call("GET", path, **kwargs)
            except httpx.TransportError:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.2)

    async def configure(self, config: dict[str, Any]) -> None:
        await self.call("PUT", "/config", json=config)

    async def write(self, msisdn: str, message: Message) -> None:
        """The phone writes `message` (a Cloud API message object); redelivered until 200."""
        raw = {"id": f"wamid.FAULTRUN{next(_wamids):08d}", **message}
        deadline = time.monotonic() + self.redeliver_for
        pause = 0.2
        while True:
            try:
                answer = await self.call("POST", f"/phones/{msisdn}/messages", json={"raw": raw})
                if answer["webhook_status"] == 200:
                    return
            except httpx.HTTPError:
                pass  # the simulator itself is never killed; a slow answer is retried
            self.undelivered_posts += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"the app never accepted a webhook from …{msisdn[-3:]}")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)

    async def inbox(self, msisdn: str, after: str | None = None) -> list[Message]:
        params = {"after": after} if after else None
        messages: list[Message] = await self.read(f"/phones/{msisdn}/inbox", params=params)
        return messages

    async def prompts(self) -> list[Message]:
        prompts: list[Message] = await self.read("/mpesa/prompts")
        return prompts


def text(body: str) -> Message:
    return {"type": "text", "text": {"body": body}}


def tap(button_id: str, *, on_template: bool) -> Message:
    """A tap on a reply button, or on a template's quick-reply button (a different shape)."""
    if on_template:
        return {"type": "button", "button": {"payload": button_id, "text": PAY_TITLE}}
    reply = {"id": button_id, "title": PAY_TITLE}
    return {"type": "interactive", "interactive": {"type": "button_reply", "button_reply": reply}}


def classify(message: Message) -> str:
    """What a person reads in a message: free-form text and its template say the same thing."""
    template = (message.get("template") or {}).get("name")
    if template is not None:
        return _TEMPLATES.get(template, "other")
    body = message.get("text") or ""
    if body.startswith("Payment received"):
        return "receipt"
    if body.startswith("Paid: invoice"):
        return "merchant_receipt"
    if "did not go through" in body:
        return "failed"
    if body.startswith("We could not confirm whether"):
        return "unconfirmed"
    if "sent you an invoice" in body:
        return "invoice"
    if body.startswith("Check your phone"):
        return "check"
    if _WAIT.search(body) or _CHECKING in body:
        return "wait"
    if "already paid" in body:
        return "paid"
    return "other"


def pay_button(message: Message) -> str | None:
    for button in message.get("buttons") or []:
        if str(button.get("id", "")).startswith("pay:"):
            return str(button["id"])
    return None


@dataclass
class Flow:
    """One merchant invoicing one customer, who pays after the hesitations in `answers`."""

    index: int
    merchant: str
    customer: str
    amount: int
    answers: tuple[str, ...]
    number: str | None = None
    taps: int = 0
    failures: int = 0
    waits: int = 0
    paid: bool = False
    took: float = 0.0  # seconds from the merchant's first message to the customer's receipt
    seen: list[str] = field(default_factory=list)  # what the customer read, in order
    timeline: list[str] = field(default_factory=list)
    started: float = 0.0
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def note(self, what: str) -> None:
        self.timeline.append(f"{time.monotonic() - self.started:.1f} {what}")

    @property
    def state(self) -> str:
        return (
            f"flow {self.index} ({self.number}): taps={self.taps} failures={self.failures} "
            f"waits={self.waits} paid={self.paid} read={self.seen[-6:]}"
        )


def make_flows(count: int) -> list[Flow]:
    return [
        Flow(
            index=i,
            merchant=f"2547220{i:05d}",
            customer=f"2547110{i:05d}",
            amount=100 + 7 * i,
            answers=HESITATIONS[i % len(HESITATIONS)],
        )
        for i in range(count)
    ]


def auto_answers(flows: Sequence[Flow]) -> dict[str, list[str]]:
    """The simulator's per-phone prompt answers; every prompt after the queue is accepted."""
    return {flow.customer: list(flow.answers) for flow in flows if flow.answers}


@dataclass(frozen=True)
class Patience:
    cooldown: float  # PAY_COOLDOWN: how long a customer waits after a failure
    idle: float  # how long they wait for any news before tapping again
    poll: float  # how often they look at their phone


async def merchant_invoices(sim: SimulatorControl, flow: Flow) -> None:
    await sim.write(flow.merchant, text(f"name Fault Shop {flow.index}"))
    phone = "0" + flow.customer[3:]
    await sim.write(flow.merchant, text(f"invoice {phone} {flow.amount} Fault run {flow.index}"))


async def customer_pays(sim: SimulatorControl, flow: Flow, patience: Patience) -> None:
    """Wait for the invoice, then tap Pay as a person would until the receipt arrives."""
    invoice, last = await _wait_for_invoice(sim, flow, patience)
    button = pay_button(invoice)
    assert button is not None, invoice
    flow.number = button.removeprefix("pay:")
    on_template = invoice["type"] == "template"
    next_tap = time.monotonic()
    while not flow.paid:
        if time.monotonic() >= next_tap:
            await sim.write(flow.customer, tap(button, on_template=on_template))
            flow.taps += 1
            flow.note("tap")
            next_tap = time.monotonic() + patience.idle
        await asyncio.sleep(patience.poll)
        for message in await sim.inbox(flow.customer, after=last):
            last = message["wamid"]
            next_tap = _react(flow, message, next_tap, patience)
            if message["type"] == "template" or pay_button(message):
                on_template = message["type"] == "template"


def _react(flow: Flow, message: Message, next_tap: float, patience: Patience) -> float:
    """When the customer taps next, after reading `message`."""
    what = classify(message)
    flow.seen.append(what)
    flow.note(what)
    now = time.monotonic()
    if what in ("receipt", "paid"):
        flow.paid = True
    elif what == "failed":
        flow.failures += 1
        return now + patience.cooldown
    elif what == "unconfirmed":
        # Told the payment may have gone through: a careful customer checks for M-PESA's SMS;
        # this one pays again, so that every flow ends paid (the run reports the case).
        return now + patience.cooldown
    elif what == "wait":
        flow.waits += 1
        match = _WAIT.search(message.get("text") or "")
        return now + (int(match.group(1)) if match else patience.cooldown)
    elif what == "check":
        return now + patience.idle  # the prompt is on the phone: give it time
    return next_tap


async def _wait_for_invoice(
    sim: SimulatorControl, flow: Flow, patience: Patience
) -> tuple[Message, str]:
    while True:
        for message in await sim.inbox(flow.customer):
            if classify(message) == "invoice" and pay_button(message):
                return message, message["wamid"]
        await asyncio.sleep(patience.poll)


async def run_flows(
    sim: SimulatorControl,
    flows: Sequence[Flow],
    patience: Patience,
    *,
    concurrency: int,
    stagger: float,
    timeout: float,
) -> None:
    """Every flow, at most `concurrency` at a time, starting `stagger` seconds apart; a flow
    still unpaid after `timeout` fails the run with what each stuck customer saw."""
    gate = asyncio.Semaphore(concurrency)

    async def one(flow: Flow) -> None:
        await asyncio.sleep(flow.index * stagger)
        async with gate:
            flow.started, flow.started_at = time.monotonic(), datetime.now(UTC)
            await merchant_invoices(sim, flow)
            flow.note("invoiced")
            await customer_pays(sim, flow, patience)
            flow.took = time.monotonic() - flow.started

    try:
        async with asyncio.timeout(timeout), asyncio.TaskGroup() as group:
            for flow in flows:
                group.create_task(one(flow))
    except TimeoutError:
        stuck = [flow.state for flow in flows if not flow.paid]
        raise AssertionError(f"{len(stuck)} flows never got paid:\n" + "\n".join(stuck)) from None
