"""Settings, read once from the environment and `.env`, then passed in (DESIGN §2)."""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.exc import ArgumentError

SANDBOX_SHORTCODE = "174379"
# Safaricom's published sandbox passkey for shortcode 174379: public, not a secret.
SANDBOX_PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
# The secrets we choose ourselves, in production: long enough that nobody guesses them.
MIN_SECRET_LENGTH = 16
# What fly.toml ships as BASE_URL: someone else's host would receive callbacks and links.
BASE_URL_PLACEHOLDER = "change-me"
_SHORTCODE = re.compile(r"[0-9]{5,8}")
# What a secret that is a segment of a URL path may hold (secrets.token_urlsafe's alphabet).
_PATH_SAFE = re.compile(r"[A-Za-z0-9_-]+")
OWN_SECRETS = (
    "whatsapp_webhook_secret",
    "mpesa_callback_secret",
    "mpesa_callback_secret_previous",
    "metrics_token",
)

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

    # env_ignore_empty: `METRICS_TOKEN=` (as left by copying .env.example) means "unset", not an
    # empty token that production would accept and /metrics would compare against.
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
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
    # The longest wait between two attempts of an outbox row (the backoff doubles up to it).
    outbox_backoff_max: float = Field(default=600, gt=0)
    # How long one run of an outbox row may take, provider calls included; past it the run is
    # cancelled and the row retried later (as after a crash), so one stuck call never holds a
    # row, and the chat queued behind it, for ever.
    outbox_handler_timeout: float = Field(default=120, gt=0)
    # How often each worker sweeps for work no outbox row will do any more (payments/sweep.py).
    outbox_sweep_interval: float = Field(default=60, gt=0)
    # How long a call to 360dialog or Daraja may take to answer; past it the call has "timed
    # out after sending" (STYLE §8): a WhatsApp send is retried, an STK push never is.
    provider_timeout: float = Field(default=15, gt=0)

    @field_validator("mpesa_callback_allowlist", "trusted_proxies", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("mpesa_callback_allowlist", "trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        # Refused here, not skipped where it is used: a typo would otherwise turn every
        # callback away (or trust no proxy) without a word.
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network, like 196.201.214.200 or "
                    "196.201.214.0/24"
                ) from None
        return value

    @field_validator("mpesa_shortcode", "mpesa_party_b")
    @classmethod
    def _a_shortcode(cls, value: str | None) -> str | None:
        # Daraja takes them as numbers: anything else fails only at the first real payment.
        if value is not None and not _SHORTCODE.fullmatch(value.strip()):
            raise ValueError("must be the PayBill or till number: digits only, like 174379")
        return value.strip() if value is not None else None

    @field_validator("mpesa_callback_secret", "mpesa_callback_secret_previous")
    @classmethod
    def _fits_a_path(cls, value: SecretStr | None) -> SecretStr | None:
        # It is a segment of the callback URL: a "/" (base64's, say) or "%" could never match
        # the route, and every callback would be a 404 that nobody sees.
        if value is not None and not _PATH_SAFE.fullmatch(value.get_secret_value()):
            raise ValueError(
                "may hold only letters, digits, '-' and '_' (it is part of the callback URL): "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        return async_database_url(value)

    @field_validator("base_url", "whatsapp_api_url", "mpesa_api_url")
    @classmethod
    def _an_origin(cls, value: str | None) -> str | None:
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) address, like https://pay.example.com")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _handler_outlasts_its_calls(self) -> Settings:
        # A run makes up to two provider calls (a Daraja token, then the push): cancelling it
        # while they may still answer in time would only waste them.
        if self.outbox_handler_timeout < 3 * self.provider_timeout:
            raise ValueError("OUTBOX_HANDLER_TIMEOUT must be at least three times PROVIDER_TIMEOUT")
        return self

    @model_validator(mode="after")
    def _daraja_somewhere(self) -> Settings:
        # The simulator's Daraja lives in the app only while the simulator is on: off, with
        # no other address, every push would fail.
        simulated = self.mpesa_environment is MpesaEnvironment.SIMULATOR
        nowhere = simulated and not self.simulator_enabled and not self.mpesa_api_url
        # (production names every problem at once, below)
        if nowhere and not self.is_production:
            raise ValueError(
                "SIMULATOR is off but MPESA_ENVIRONMENT=simulator: set MPESA_ENVIRONMENT "
                "to sandbox or production, or MPESA_API_URL to a standalone simulator"
            )
        return self

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


_DATABASE_HINT = (
    "use sqlite+aiosqlite:///./invoiceiq.db or postgresql+asyncpg://user:password@host:5432/name"
)


# Query parameters of a PostgreSQL URL that reach asyncpg.connect as they are (strings).
# libpq's others (channel_binding, connect_timeout, application_name, options…) would make
# every connection fail with a TypeError, so they are refused when the settings are read.
# `host` (a Unix socket, or several hosts) SQLAlchemy reads itself.
_ASYNCPG_PARAMETERS = frozenset(
    {"host", "ssl", "target_session_attrs", "krbsrvname", "gsslib", "prepared_statement_cache_size"}
)


def async_database_url(value: str) -> str:
    """DATABASE_URL with the async driver SQLAlchemy needs; refuses any other database.

    `postgres://` and `postgresql://` (what Fly.io and most hosts hand out) become
    `postgresql+asyncpg://`, and their libpq `sslmode` becomes asyncpg's `ssl`; `sqlite://`
    becomes `sqlite+aiosqlite://`. The message never repeats the URL: it may hold a password.
    """
    try:
        url = sa.make_url(value)
    except ArgumentError:
        raise ValueError(f"not a database URL; {_DATABASE_HINT}") from None
    if url.drivername in ("sqlite", "sqlite+aiosqlite"):
        scheme, rest = value.split(":", 1)
        return f"sqlite+aiosqlite:{rest}" if scheme == "sqlite" else value
    if url.drivername not in ("postgres", "postgresql", "postgresql+asyncpg"):
        raise ValueError(f"must be SQLite or PostgreSQL; {_DATABASE_HINT}")
    unknown = sorted(set(url.query) - _ASYNCPG_PARAMETERS - {"sslmode"})
    if unknown:
        raise ValueError(
            f"has parameters the PostgreSQL driver (asyncpg) does not take: {', '.join(unknown)}; "
            "remove them (sslmode is understood)"
        )
    if url.drivername == "postgresql+asyncpg" and "sslmode" not in url.query:
        return value
    url = url.set(drivername="postgresql+asyncpg")
    if "sslmode" in url.query:
        url = url.update_query_dict({"ssl": url.query["sslmode"]}).difference_update_query(
            ["sslmode"]
        )
    return url.render_as_string(hide_password=False)


def describe_settings_error(error: ValidationError) -> str:
    """A ValidationError of Settings as lines people can act on, never echoing a value.

    Pydantic's own text repeats the input, which holds the secrets.
    """
    lines: list[str] = []
    for item in error.errors(include_url=False, include_input=False):
        message = str(item["msg"]).removeprefix("Value error, ")
        field = ".".join(str(part) for part in item["loc"]).upper()
        lines.append(f"{field}: {message}" if field else message)
    return "Configuration error:\n" + "\n".join(lines)


def production_problems(settings: Settings) -> list[str]:
    """Why these settings are unsafe for production; empty when they are fine."""
    problems: list[str] = []
    if settings.simulator_enabled:
        problems.append("SIMULATOR is on; set SIMULATOR=false")
    if settings.mpesa_environment is MpesaEnvironment.SIMULATOR:
        problems.append("MPESA_ENVIRONMENT=simulator; set sandbox or production")
    # Every secret, optional ones included once set (METRICS_TOKEN=dev-token is a placeholder too).
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr) and value.get_secret_value().startswith("dev-"):
            problems.append(f"{name.upper()} is a dev- placeholder; set a real secret")
    if settings.is_sqlite:
        problems.append("DATABASE_URL is SQLite; use PostgreSQL (postgresql+asyncpg://...)")
    if settings.metrics_token is None:
        problems.append("METRICS_TOKEN is not set; /metrics must be protected")
    # The secrets we choose (the providers issue the others): guessed, they let anyone post
    # webhooks and callbacks (the previous callback secret too, while it is accepted), or
    # read /metrics.
    for name in OWN_SECRETS:
        secret = getattr(settings, name)
        value = secret.get_secret_value() if secret is not None else None
        if value is not None and not value.startswith("dev-") and len(value) < MIN_SECRET_LENGTH:
            problems.append(
                f"{name.upper()} is shorter than {MIN_SECRET_LENGTH} characters; use a long "
                "random one (python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
    if urlsplit(settings.base_url).scheme != "https":
        problems.append("BASE_URL is not https; M-PESA callbacks and invoice links need https")
    if BASE_URL_PLACEHOLDER in settings.base_url.lower():
        problems.append("BASE_URL is still fly.toml's placeholder; set your app's public origin")
    if settings.mpesa_environment is MpesaEnvironment.PRODUCTION:
        if settings.mpesa_shortcode == SANDBOX_SHORTCODE:
            problems.append("MPESA_SHORTCODE is the sandbox's 174379; set your own shortcode")
        if settings.mpesa_passkey.get_secret_value() == SANDBOX_PASSKEY:
            problems.append("MPESA_PASSKEY is the sandbox's public passkey; set your own")
    return problems
