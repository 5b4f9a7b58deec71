"""The simulator's own configuration (DESIGN §8, `PUT /simulator/config`) and seeded dice."""

from __future__ import annotations

import random
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PromptAction = Literal["accept", "cancel", "timeout", "wrong_pin", "insufficient_funds"]
Probability = float


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AutoAnswer(_Strict):
    """How open M-PESA prompts are answered without a person: `default` for every phone, or a
    queue of answers per phone (each prompt takes the next one)."""

    default: PromptAction | None = None
    delay_ms: int = Field(default=500, ge=0)
    phones: dict[str, list[PromptAction]] = Field(default_factory=dict)


class WhatsAppFaults(_Strict):
    error_5xx: Probability = Field(default=0.0, ge=0, le=1)
    error_429: Probability = Field(default=0.0, ge=0, le=1)
    # The request never reaches the provider / reaches it but the answer is lost.
    timeout_before: Probability = Field(default=0.0, ge=0, le=1)
    timeout_after: Probability = Field(default=0.0, ge=0, le=1)


class DarajaFaults(_Strict):
    spike_arrest: Probability = Field(default=0.0, ge=0, le=1)
    error_5xx: Probability = Field(default=0.0, ge=0, le=1)
    timeout_after: Probability = Field(default=0.0, ge=0, le=1)


class CallbackFaults(_Strict):
    drop: Probability = Field(default=0.0, ge=0, le=1)
    duplicate: Probability = Field(default=0.0, ge=0, le=1)
    delay_ms: int = Field(default=0, ge=0)


class WebhookFaults(_Strict):
    duplicate: Probability = Field(default=0.0, ge=0, le=1)


class Faults(_Strict):
    whatsapp: WhatsAppFaults = Field(default_factory=WhatsAppFaults)
    daraja: DarajaFaults = Field(default_factory=DarajaFaults)
    callbacks: CallbackFaults = Field(default_factory=CallbackFaults)
    webhooks: WebhookFaults = Field(default_factory=WebhookFaults)


class SimulatorConfig(_Strict):
    seed: int = 1
    prompt_timeout_s: float = Field(default=60, gt=0)
    auto_answer: AutoAnswer = Field(default_factory=AutoAnswer)
    faults: Faults = Field(default_factory=Faults)
    # How long a simulated "timeout" holds the request before the client's own timeout fires.
    timeout_hold_s: float = Field(default=30, ge=0)
    # Delay before delivery statuses (sent, delivered, read) are posted to the webhook.
    status_delay_ms: int = Field(default=0, ge=0)
    # How long a status webhook the app did not take (no answer, or not 2xx) is posted again,
    # with backoff, as 360dialog does (for days there; 0: never again).
    webhook_retry_s: float = Field(default=60, ge=0)
    customer_window_s: float = Field(default=86_400, gt=0)
    # M-PESA ends a push of the same amount to the same phone within 2 minutes with ResultCode
    # 17; tests that shrink PAY_COOLDOWN shrink this too.
    rule_limit_window_s: float = Field(default=120, ge=0)


class Dice:
    """Seeded randomness for faults, so a run with the same seed repeats."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)  # noqa: S311 - reproducible faults, not secrecy

    def roll(self, probability: float) -> bool:
        return probability > 0 and self._random.random() < probability


class SimulatorSettings:
    """The live config and its dice; replaced as a whole by `PUT /simulator/config`."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.update(config or SimulatorConfig())

    def update(self, config: SimulatorConfig) -> None:
        self.config = config
        self.dice = Dice(config.seed)
