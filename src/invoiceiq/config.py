"""Settings, read once from the environment and `.env`, then passed in (DESIGN §2)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

SANDBOX_SHORTCODE = "174379"
# Safaricom's published sandbox passkey for shortcode 174379: public, not a secret.
SANDBOX_PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"  # noqa: S105

DARAJA_URLS = {
    "sandbox": "https://sandbox.safaricom.co.ke",
    "production": "https://api.safaricom.co.ke",
}


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class MpesaEnvironment(StrEnum):
    SIMULATOR = "simulator"
    SANDBOX = "sandbox"
    PRODUCTION = "production"


class TransactionType(StrEnum):
    PAYBILL = "CustomerPayBillOnline"
    TILL = "CustomerBuyGoodsOnline"


class SignupMode(StrEnum):
    OPEN = "open"
    APPROVAL = "approval"


class ConfigError(ValueError):
    """Settings that must not be used: the message says which and why."""


class Settings(BaseSettings):
    """Every setting of DESIGN §2. Built once (`Settings()`) and passed in."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    environment: Environment = Environment.DEVELOPMENT
    database_url: str = "sqlite+aiosqlite:///./invoiceiq.db"
    base_url: str = "http://localhost:8000"
    simulator: bool | None = None

    whatsapp_api_url: str | None = None
    whatsapp_api_key: SecretStr = SecretStr("dev-whatsapp-key")
    whatsapp_webhook_secret: SecretStr = SecretStr("dev-webhook-secret")
    whatsapp_app_secret: SecretStr | None = None
    whatsapp_verify_token: SecretStr = SecretStr("dev-verify-token")
    merchant_signup: SignupMode | None = None

    mpesa_environment: MpesaEnvironment = MpesaEnvironment.SIMULATOR
    mpesa_api_url: str | None = None
    mpesa_consumer_key: SecretStr = SecretStr("dev-consumer-key")
    mpesa_consumer_secret: SecretStr = SecretStr("dev-consumer-secret")
    mpesa_shortcode: str = SANDBOX_SHORTCODE
    mpesa_passkey: SecretStr = SecretStr(SANDBOX_PASSKEY)
    mpesa_transaction_type: TransactionType = TransactionType.PAYBILL
    mpesa_party_b: str | None = None
    mpesa_callback_secret: SecretStr = SecretStr("dev-callback-secret")
    mpesa_callback_secret_previous: SecretStr | None = None
    mpesa_confirm_callbacks: bool | None = None
    mpesa_callback_allowlist: Annotated[list[str], NoDecode] = Field(default_factory=list)
    mpesa_max_amount: int = Field(default=150_000, ge=1)

    vat_percent: int = Field(default=16, ge=0, le=100)
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    metrics_token: SecretStr | None = None

    pay_cooldown: float = Field(default=120, ge=0)
    reconcile_after: float = Field(default=90, ge=0)
    reconcile_give_up: float = Field(default=300, ge=0)
    conversation_ttl: float = Field(default=1800, gt=0)
    remind_min_interval: float = Field(default=3600, ge=0)
    customer_window: float = Field(default=86_400, gt=0)
    outbox_lease: float = Field(default=60, gt=0)
    outbox_max_attempts: int = Field(default=8, ge=1)

    @field_validator("mpesa_callback_allowlist", "trusted_proxies", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("base_url", "whatsapp_api_url", "mpesa_api_url")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment is Environment.PRODUCTION:
            problems = production_problems(self)
            if problems:
                raise ConfigError(
                    "ENVIRONMENT=production refuses to start:\n  - " + "\n  - ".join(problems)
                )
        return self

    # Derived values: defaults that depend on other settings.

    @property
    def is_production(self) -> bool:
        return self.environment is Environment.PRODUCTION

    @property
    def simulator_enabled(self) -> bool:
        if self.simulator is None:
            return not self.is_production
        return self.simulator

    @property
    def signup_mode(self) -> SignupMode:
        if self.merchant_signup is None:
            return SignupMode.APPROVAL if self.is_production else SignupMode.OPEN
        return self.merchant_signup

    @property
    def confirm_callbacks(self) -> bool:
        if self.mpesa_confirm_callbacks is None:
            # The sandbox's STK Query is unreliable (reference/daraja-mpesa.md).
            return self.mpesa_environment is not MpesaEnvironment.SANDBOX
        return self.mpesa_confirm_callbacks

    @property
    def party_b(self) -> str:
        return self.mpesa_party_b or self.mpesa_shortcode

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def whatsapp_url(self, local_origin: str) -> str:
        """360dialog base URL; with the simulator on and no URL set, the local simulator."""
        if self.whatsapp_api_url:
            return self.whatsapp_api_url
        if self.simulator_enabled:
            return f"{local_origin}/simulator/whatsapp"
        return "https://waba-v2.360dialog.io"

    def daraja_url(self, local_origin: str) -> str:
        """Daraja base URL from MPESA_API_URL, else MPESA_ENVIRONMENT."""
        if self.mpesa_api_url:
            return self.mpesa_api_url
        if self.mpesa_environment is MpesaEnvironment.SIMULATOR:
            return f"{local_origin}/simulator/daraja"
        return DARAJA_URLS[self.mpesa_environment.value]


_SECRETS = (
    "whatsapp_api_key",
    "whatsapp_webhook_secret",
    "whatsapp_verify_token",
    "mpesa_consumer_key",
    "mpesa_consumer_secret",
    "mpesa_callback_secret",
)


def production_problems(settings: Settings) -> list[str]:
    """Why these settings are unsafe for production; empty when they are fine."""
    problems: list[str] = []
    if settings.simulator_enabled:
        problems.append("SIMULATOR is on; set SIMULATOR=false")
    if settings.mpesa_environment is MpesaEnvironment.SIMULATOR:
        problems.append("MPESA_ENVIRONMENT=simulator; set sandbox or production")
    for name in _SECRETS:
        value: SecretStr = getattr(settings, name)
        if value.get_secret_value().startswith("dev-"):
            problems.append(f"{name.upper()} is a dev- placeholder; set a real secret")
    if settings.is_sqlite:
        problems.append("DATABASE_URL is SQLite; use PostgreSQL (postgresql+asyncpg://...)")
    if settings.metrics_token is None:
        problems.append("METRICS_TOKEN is not set; /metrics must be protected")
    return problems
