"""The Daraja fake's STK prompts: opened by a push, answered by hand, queue or timer, called back.

`PromptBook` shares the fake's lock, so a prompt and the token change under the same rule: never
held across an `await`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import string
import threading
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import httpx

from invoiceiq.kit.clock import NAIROBI, utcnow
from invoiceiq.mpesa import simulator_checks as checks
from invoiceiq.simulator.config import PromptAction, SimulatorConfig, SimulatorSettings

# The fake's logs keep one logger name, whichever of its modules writes them.
logger = logging.getLogger("invoiceiq.mpesa.simulator")

# What the customer's phone answers, as (ResultCode, ResultDesc) of the official result list.
ACTION_RESULTS: Final[dict[str, tuple[int, str]]] = {
    "accept": (0, "The service request is processed successfully."),
    "cancel": (1032, "Request cancelled by user"),
    "timeout": (1037, "DS timeout user cannot be reached"),
    "wrong_pin": (2001, "The initiator information is invalid."),
    "insufficient_funds": (1, "The balance is insufficient for the transaction."),
}
# Results M-PESA gives without showing a prompt at all.
RULE_LIMITED: Final = (17, "Rule limited.")
NOT_PERMITTED: Final = (2028, "The request is not permitted according to product assignment.")
NO_OPERATOR: Final = ("SFC_IC0003", "The operator does not exist.")

_LOCKED: Final = (
    "Unable to lock subscriber, a transaction is already in process for the current subscriber"
)
_RECEIPT_ALPHABET: Final = string.ascii_uppercase + string.digits


@dataclass
class Prompt:
    checkout_request_id: str
    merchant_request_id: str
    phone: str
    amount: int
    account_reference: str
    callback_url: str
    at: datetime
    state: Literal["open", "answered"] = "open"
    result_code: int | str | None = None
    result_desc: str | None = None
    answered_at: datetime | None = None
    receipt: str | None = None

    def view(self) -> dict[str, Any]:
        return {
            "checkout_request_id": self.checkout_request_id,
            "merchant_request_id": self.merchant_request_id,
            "phone": self.phone,
            "amount": self.amount,
            "account_reference": self.account_reference,
            "state": self.state,
            "result_code": None if self.result_code is None else str(self.result_code),
            "at": self.at.isoformat(),
        }


class PromptBook:
    """The prompts of one business account (`transaction_type` and `party_b` are what it takes),
    their timers and the callbacks that report their results."""

    def __init__(
        self,
        settings: SimulatorSettings,
        *,
        http: httpx.AsyncClient,
        lock: threading.Lock,
        transaction_type: str,
        party_b: str,
    ) -> None:
        self._settings = settings
        self._http = http
        self._lock = lock
        self._transaction_type = transaction_type
        self._party_b = party_b
        self._tasks: set[asyncio.Task[None]] = set()
        self.forget()

    def forget(self) -> None:
        """Drop every prompt and the history; called with the lock held (or before sharing)."""
        self._prompts: dict[str, Prompt] = {}
        self._last_push: dict[tuple[str, int], float] = {}
        self._receipts: set[str] = set()
        self._queues: dict[str, deque[PromptAction]] = {}
        self._queues_from: SimulatorConfig | None = None

    def views(
        self, *, phone: str | None, state: Literal["open", "answered"] | None
    ) -> list[dict[str, Any]]:
        with self._lock:
            found = list(self._prompts.values())
        return [
            prompt.view()
            for prompt in found
            if (phone is None or prompt.phone == phone) and (state is None or prompt.state == state)
        ]

    def find(self, checkout_request_id: str) -> tuple[Prompt | None, bool]:
        """The prompt (None if unknown) and whether it has been answered."""
        with self._lock:
            prompt = self._prompts.get(checkout_request_id)
            return prompt, prompt is not None and prompt.state == "answered"

    def answer(
        self, checkout_request_id: str, action: PromptAction, delay_ms: int
    ) -> dict[str, Any]:
        """See `DarajaFake.answer`."""
        if action not in ACTION_RESULTS:
            raise ValueError(f"unknown action {action!r}")
        if delay_ms < 0:
            raise ValueError("delay_ms must not be negative")
        code, desc = ACTION_RESULTS[action]
        with self._lock:
            prompt = self._prompts[checkout_request_id]
            if prompt.state != "open":
                raise ValueError("that prompt was already answered")
            self._settle(prompt, code, desc)
            view = prompt.view()
        self._send_callback(prompt, delay_ms)
        return view

    def open(self, push: checks.Push) -> Prompt:
        """A prompt on the customer's phone, or one M-PESA ends at once and calls back about."""
        now = utcnow()
        with self._lock:
            if any(p.state == "open" and p.phone == push.phone for p in self._prompts.values()):
                raise checks.error(500, checks.GENERIC, _LOCKED)
            outcome = self._outcome_without_prompt(push)
            prompt = Prompt(
                checkout_request_id=self._new_checkout_id(push.phone, now),
                merchant_request_id=_merchant_request_id(),
                phone=push.phone,
                amount=push.amount,
                account_reference=push.account_reference,
                callback_url=push.callback_url,
                at=now,
            )
            self._prompts[prompt.checkout_request_id] = prompt
            if outcome is None:
                self._last_push[(push.phone, push.amount)] = time.monotonic()
            else:
                self._settle(prompt, *outcome)
        if outcome is None:
            self._start_timers(prompt)
        else:
            self._send_callback(prompt, 0)
        return prompt

    def cancel_tasks(self) -> list[asyncio.Task[None]]:
        """Stop pending answers and callbacks; the tasks are returned to be awaited."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        return tasks

    def _outcome_without_prompt(self, push: checks.Push) -> tuple[int | str, str] | None:
        """Accepted pushes M-PESA ends at once, without a prompt on the phone."""
        # A till needs CustomerBuyGoodsOnline with the till in PartyB, a PayBill its own
        # shortcode; otherwise 2028 or SFC_IC0003 (MpesaExpressSimulate, FAQ 10, result codes).
        if push.transaction_type != self._transaction_type:
            return NOT_PERMITTED
        if push.party_b != self._party_b:
            return NO_OPERATOR
        # The same amount to the same phone within 2 minutes ends in ResultCode 17 (official
        # list); the window is `SimulatorConfig.rule_limit_window_s`, so tests can shrink it.
        last = self._last_push.get((push.phone, push.amount))
        window = self._settings.config.rule_limit_window_s
        if last is not None and time.monotonic() - last < window:
            return RULE_LIMITED
        return None

    def _settle(self, prompt: Prompt, code: int | str, desc: str) -> None:
        """Called with the lock held."""
        prompt.state = "answered"
        prompt.result_code = code
        prompt.result_desc = desc
        prompt.answered_at = utcnow()
        if code == 0:
            prompt.receipt = self._new_receipt(prompt.answered_at)

    def _start_timers(self, prompt: Prompt) -> None:
        config = self._settings.config
        self._spawn(
            self._answer_later(prompt.checkout_request_id, "timeout", config.prompt_timeout_s)
        )
        action = self._auto_action(prompt.phone, config)
        if action is not None:
            delay_s = config.auto_answer.delay_ms / 1000
            self._spawn(self._answer_later(prompt.checkout_request_id, action, delay_s))

    def _auto_action(self, phone: str, config: SimulatorConfig) -> PromptAction | None:
        """The phone's queue first (each prompt takes the next answer), else the default."""
        with self._lock:
            if self._queues_from is not config:
                # The config was replaced (PUT /simulator/config): start its queues afresh,
                # without consuming the lists of the config object itself.
                self._queues = {p: deque(a) for p, a in config.auto_answer.phones.items()}
                self._queues_from = config
            queue = self._queues.get(phone)
            if queue:
                return queue.popleft()
        return config.auto_answer.default

    async def _answer_later(
        self, checkout_request_id: str, action: PromptAction, after_s: float
    ) -> None:
        await asyncio.sleep(after_s)
        # Already answered by someone else, or forgotten by a reset: nothing to do.
        with contextlib.suppress(KeyError, ValueError):
            self.answer(checkout_request_id, action, 0)

    def _send_callback(self, prompt: Prompt, delay_ms: int) -> None:
        faults = self._settings.config.faults.callbacks
        dice = self._settings.dice
        # Rolled now, not inside the delivery task, so the dice are used in a repeatable order.
        if dice.roll(faults.drop):
            # The MerchantRequestID, not the CheckoutRequestID: that one ends in the phone number.
            logger.info(
                "simulated callback dropped", extra={"merchant_request": prompt.merchant_request_id}
            )
            return
        copies = 2 if dice.roll(faults.duplicate) else 1
        payload = _callback_body(prompt)
        delay_s = (delay_ms + faults.delay_ms) / 1000
        self._spawn(self._deliver(prompt.callback_url, payload, copies, delay_s))

    async def _deliver(
        self, url: str, payload: dict[str, Any], copies: int, delay_s: float
    ) -> None:
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        for _ in range(copies):
            try:
                response = await self._http.post(url, json=payload)
            except httpx.HTTPError as error:
                # Daraja does not retry a callback it could not deliver (reference §3.6).
                logger.warning("simulated callback not delivered: %s", type(error).__name__)
                return
            if not response.is_success:
                logger.warning("simulated callback answered %s", response.status_code)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _new_checkout_id(self, phone: str, now: datetime) -> str:
        """`ws_CO_` + Nairobi date and time + milliseconds + the phone's national digits, as the
        documented samples look; called with the lock held."""
        stamp = now.astimezone(NAIROBI).strftime("%d%m%Y%H%M%S")
        millis = now.microsecond // 1000
        while True:
            candidate = f"ws_CO_{stamp}{millis:03d}{phone[3:]}"
            if candidate not in self._prompts:
                return candidate
            millis = (millis + 1) % 1000

    def _new_receipt(self, at: datetime) -> str:
        """10 characters like `TCE4XK7Q2M`: M-PESA's first letter moves on each year (S in
        2024, T in 2025); called with the lock held."""
        year_letter = string.ascii_uppercase[(at.year - 2006) % 26]
        while True:
            receipt = year_letter + "".join(secrets.choice(_RECEIPT_ALPHABET) for _ in range(9))
            if receipt not in self._receipts:
                self._receipts.add(receipt)
                return receipt


def _callback_body(prompt: Prompt) -> dict[str, Any]:
    """`Body.stkCallback` exactly as Daraja posts it; metadata only on success."""
    callback: dict[str, Any] = {
        "MerchantRequestID": prompt.merchant_request_id,
        "CheckoutRequestID": prompt.checkout_request_id,
        "ResultCode": prompt.result_code,
        "ResultDesc": prompt.result_desc,
    }
    if prompt.result_code == 0 and prompt.answered_at is not None:
        answered = prompt.answered_at.astimezone(NAIROBI).strftime("%Y%m%d%H%M%S")
        callback["CallbackMetadata"] = {
            "Item": [
                # Amount as a decimal number; Balance with no Value, as older samples show.
                {"Name": "Amount", "Value": float(prompt.amount)},
                {"Name": "MpesaReceiptNumber", "Value": prompt.receipt},
                {"Name": "Balance"},
                {"Name": "TransactionDate", "Value": int(answered)},
                {"Name": "PhoneNumber", "Value": int(prompt.phone)},
            ]
        }
    return {"Body": {"stkCallback": callback}}


def _merchant_request_id() -> str:
    # Shaped like "29115-34620561-1".
    return f"{secrets.randbelow(90000) + 10000}-{secrets.randbelow(10**8):08d}-1"
