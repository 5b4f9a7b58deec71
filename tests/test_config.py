"""Settings: every default of DESIGN §2, env and `.env` reading, and production's refusals."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from invoiceiq.config import (
    SANDBOX_PASSKEY,
    SANDBOX_SHORTCODE,
    Environment,
    MpesaEnvironment,
    Settings,
    SignupMode,
    TransactionType,
    describe_settings_error,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCAL = "http://127.0.0.1:8123"

# Everything production needs, so each refusal test can break exactly one thing.
PRODUCTION: dict[str, Any] = {
    "environment": "production",
    "database_url": "postgresql+asyncpg://invoiceiq:pw@db.internal:5432/invoiceiq",
    "base_url": "https://pay.example.co.ke",
    "whatsapp_api_key": "live-whatsapp-key",
    "whatsapp_webhook_secret": "live-webhook-secret",
    "whatsapp_verify_token": "live-verify-token",
    "mpesa_environment": "production",
    "mpesa_consumer_key": "live-consumer-key",
    "mpesa_consumer_secret": "live-consumer-secret",
    "mpesa_shortcode": "600100",
    "mpesa_passkey": "live-passkey",
    "mpesa_callback_secret": "live-callback-secret",
    "metrics_token": "live-metrics-token",
}
DEV_SECRETS = {
    "whatsapp_api_key": "dev-whatsapp-key",
    "whatsapp_webhook_secret": "dev-webhook-secret",
    "whatsapp_verify_token": "dev-verify-token",
    "mpesa_consumer_key": "dev-consumer-key",
    "mpesa_consumer_secret": "dev-consumer-secret",
    "mpesa_callback_secret": "dev-callback-secret",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting leaks in from the shell running the tests, nor from a `.env` in the cwd."""
    fields = set(Settings.model_fields)
    for name in list(os.environ):
        if name.lower() in fields:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


def secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


def refusal(**values: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        settings(**values)
    return describe_settings_error(caught.value)


# --- Defaults ---------------------------------------------------------------------------------


def test_defaults_are_those_of_design_section_2() -> None:
    s = settings()
    assert s.environment is Environment.DEVELOPMENT
    assert s.database_url == "sqlite+aiosqlite:///./invoiceiq.db"
    assert s.base_url == "http://localhost:8000"
    assert s.whatsapp_api_url is None
    assert secret(s.whatsapp_api_key) == "dev-whatsapp-key"
    assert secret(s.whatsapp_webhook_secret) == "dev-webhook-secret"
    assert s.whatsapp_app_secret is None
    assert secret(s.whatsapp_verify_token) == "dev-verify-token"
    assert s.mpesa_environment is MpesaEnvironment.SIMULATOR
    assert s.mpesa_api_url is None
    assert secret(s.mpesa_consumer_key).startswith("dev-")  # type: ignore[union-attr]
    assert secret(s.mpesa_consumer_secret).startswith("dev-")  # type: ignore[union-attr]
    assert s.mpesa_shortcode == "174379"
    assert secret(s.mpesa_passkey) == SANDBOX_PASSKEY
    assert s.mpesa_transaction_type is TransactionType.PAYBILL
    assert secret(s.mpesa_callback_secret) == "dev-callback-secret"
    assert s.mpesa_callback_secret_previous is None
    assert s.mpesa_callback_allowlist == []
    assert s.mpesa_max_amount == 150_000
    assert s.vat_percent == 16
    assert s.trusted_proxies == []
    assert s.metrics_token is None


def test_timing_defaults() -> None:
    s = settings()
    assert s.pay_cooldown == 120
    assert s.reconcile_after == 90
    assert s.reconcile_give_up == 300
    assert s.conversation_ttl == 1800
    assert s.remind_min_interval == 3600
    assert s.customer_window == 86_400
    assert s.outbox_lease == 60
    assert s.outbox_max_attempts == 8


def test_sandbox_passkey_is_safaricoms_published_one() -> None:
    # Daraja's sandbox test credentials page: shortcode 174379 and this passkey.
    assert re.fullmatch(r"[0-9a-f]{64}", SANDBOX_PASSKEY)
    assert SANDBOX_PASSKEY.startswith("bfb279f9aa9bdbcf158e97dd71a467cd")


def test_simulator_is_on_in_development_and_off_in_production() -> None:
    assert settings().simulator_enabled is True
    assert settings(**PRODUCTION).simulator_enabled is False
    assert settings(simulator=False, mpesa_environment="sandbox").simulator_enabled is False


def test_the_simulator_off_with_nowhere_else_for_daraja_is_refused() -> None:
    """Its Daraja lives in the app only while it is on: every push would fail."""
    with pytest.raises(ValidationError, match="MPESA_ENVIRONMENT to sandbox or production"):
        settings(simulator=False)
    assert settings(simulator=False, mpesa_api_url="http://127.0.0.1:9000/simulator/daraja")


def test_merchant_signup_is_open_in_development_and_approval_in_production() -> None:
    assert settings().signup_mode is SignupMode.OPEN
    assert settings(**PRODUCTION).signup_mode is SignupMode.APPROVAL
    assert settings(**PRODUCTION, merchant_signup="open").signup_mode is SignupMode.OPEN
    assert settings(merchant_signup="approval").signup_mode is SignupMode.APPROVAL


@pytest.mark.parametrize(
    ("mpesa_environment", "expected"),
    [("simulator", True), ("sandbox", False), ("production", True)],
)
def test_callbacks_are_confirmed_except_on_the_sandbox(
    mpesa_environment: str, expected: bool
) -> None:
    assert settings(mpesa_environment=mpesa_environment).confirm_callbacks is expected


def test_callback_confirmation_can_be_forced() -> None:
    s = settings(mpesa_environment="sandbox", mpesa_confirm_callbacks=True)
    assert s.confirm_callbacks is True
    assert settings(mpesa_confirm_callbacks=False).confirm_callbacks is False


def test_party_b_is_the_shortcode_unless_a_till_is_set() -> None:
    assert settings().party_b == "174379"
    assert settings(mpesa_shortcode="600100").party_b == "600100"
    till = settings(mpesa_transaction_type="CustomerBuyGoodsOnline", mpesa_party_b="5123456")
    assert till.party_b == "5123456"
    assert till.mpesa_transaction_type is TransactionType.TILL


def test_provider_urls_point_at_the_simulator_when_it_is_on() -> None:
    s = settings()
    assert s.whatsapp_url(LOCAL) == f"{LOCAL}/simulator/whatsapp"
    assert s.daraja_url(LOCAL) == f"{LOCAL}/simulator/daraja"


def test_provider_urls_without_the_simulator() -> None:
    s = settings(simulator=False, mpesa_environment="sandbox")
    assert s.whatsapp_url(LOCAL) == "https://waba-v2.360dialog.io"
    assert s.daraja_url(LOCAL) == "https://sandbox.safaricom.co.ke"
    assert settings(**PRODUCTION).daraja_url(LOCAL) == "https://api.safaricom.co.ke"


def test_explicit_provider_urls_win_and_lose_a_trailing_slash() -> None:
    s = settings(whatsapp_api_url="https://wa.example/", mpesa_api_url="https://daraja.example/")
    assert s.whatsapp_url(LOCAL) == "https://wa.example"
    assert s.daraja_url(LOCAL) == "https://daraja.example"
    assert settings(base_url="https://pay.example/").base_url == "https://pay.example"


# --- Reading the environment and .env ---------------------------------------------------------


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "sqlite+aiosqlite:///./other.db")
    monkeypatch.setenv("SIMULATOR", "false")
    monkeypatch.setenv("PAY_COOLDOWN", "0.5")
    monkeypatch.setenv("OUTBOX_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("METRICS_TOKEN", "scrape-me")
    monkeypatch.setenv("MPESA_ENVIRONMENT", "sandbox")
    s = settings()
    assert s.database_url == "sqlite+aiosqlite:///./other.db"
    assert s.simulator_enabled is False
    assert s.pay_cooldown == 0.5
    assert s.outbox_max_attempts == 3
    assert secret(s.metrics_token) == "scrape-me"
    assert s.confirm_callbacks is False


def test_dotenv_file_is_read_and_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        "BASE_URL=https://from-dotenv.example\n"
        "VAT_PERCENT=8\n"
        "TRUSTED_PROXIES=10.0.0.1,10.0.0.2\n"
        "RECONCILE_AFTER=1.5\n"
        "SOMETHING_ELSE=ignored\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("VAT_PERCENT", "0")
    s = Settings()
    assert s.base_url == "https://from-dotenv.example"
    assert s.vat_percent == 0
    assert s.trusted_proxies == ["10.0.0.1", "10.0.0.2"]
    assert s.reconcile_after == 1.5


def test_empty_values_mean_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # As left by copying .env.example and blanking a line: an empty METRICS_TOKEN must not
    # become a token of "" that production accepts.
    (tmp_path / ".env").write_text("METRICS_TOKEN=\nSIMULATOR=\nMPESA_PARTY_B=\n", encoding="utf-8")
    monkeypatch.setenv("WHATSAPP_APP_SECRET", "")
    s = Settings()
    assert s.metrics_token is None
    assert s.whatsapp_app_secret is None
    assert s.simulator_enabled is True
    assert s.party_b == s.mpesa_shortcode


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("196.201.214.200", ["196.201.214.200"]),
        ("196.201.214.200, 196.201.214.206 ,,", ["196.201.214.200", "196.201.214.206"]),
        ("", []),
    ],
)
def test_comma_lists(monkeypatch: pytest.MonkeyPatch, raw: str, expected: list[str]) -> None:
    monkeypatch.setenv("MPESA_CALLBACK_ALLOWLIST", raw)
    monkeypatch.setenv("TRUSTED_PROXIES", raw)
    s = settings()
    assert s.mpesa_callback_allowlist == expected
    assert s.trusted_proxies == expected


def test_comma_lists_accept_python_lists_too() -> None:
    assert settings(trusted_proxies=["10.0.0.1"]).trusted_proxies == ["10.0.0.1"]


def test_settings_are_frozen() -> None:
    s = settings()
    with pytest.raises(ValidationError):
        s.vat_percent = 10  # type: ignore[misc]


def test_secrets_do_not_show_in_repr() -> None:
    s = settings(**PRODUCTION)
    assert "live-" not in repr(s)
    assert "live-" not in str(s)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("vat_percent", 101),
        ("mpesa_max_amount", 0),
        ("outbox_max_attempts", 0),
        ("outbox_lease", 0),
        ("pay_cooldown", -1),
        ("environment", "staging"),
        ("mpesa_transaction_type", "CustomerPayBill"),
    ],
)
def test_out_of_range_values_are_refused(name: str, value: Any) -> None:
    assert name.upper() in refusal(**{name: value})


def test_a_handler_timeout_shorter_than_its_provider_calls_is_refused() -> None:
    message = refusal(outbox_handler_timeout=40, provider_timeout=15)
    assert "OUTBOX_HANDLER_TIMEOUT must be at least three times PROVIDER_TIMEOUT" in message
    assert settings(outbox_handler_timeout=45, provider_timeout=15).outbox_handler_timeout == 45


# --- DATABASE_URL -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite+aiosqlite:///./invoiceiq.db", "sqlite+aiosqlite:///./invoiceiq.db"),
        ("sqlite:///./invoiceiq.db", "sqlite+aiosqlite:///./invoiceiq.db"),
        ("sqlite:///:memory:", "sqlite+aiosqlite:///:memory:"),
        ("postgresql+asyncpg://u:p@h:5432/d", "postgresql+asyncpg://u:p@h:5432/d"),
        ("postgres://u:p@h:5432/d", "postgresql+asyncpg://u:p@h:5432/d"),
        # What `fly postgres attach` sets: libpq's sslmode, which asyncpg calls ssl.
        (
            "postgres://u:p@h.flycast:5432/d?sslmode=disable",
            "postgresql+asyncpg://u:p@h.flycast:5432/d?ssl=disable",
        ),
        ("postgresql://u:p%40ss@h/d", "postgresql+asyncpg://u:p%40ss@h/d"),
    ],
)
def test_database_url_gets_its_async_driver(given: str, expected: str) -> None:
    assert settings(database_url=given).database_url == expected


@pytest.mark.parametrize(
    "url", ["mysql://root:hunter2@h/d", "postgresql+psycopg2://u:hunter2@h/d", "hunter2"]
)
def test_other_databases_are_refused_without_echoing_the_url(url: str) -> None:
    message = refusal(database_url=url)
    assert "DATABASE_URL:" in message
    assert "sqlite+aiosqlite" in message and "postgresql+asyncpg" in message
    assert "hunter2" not in message


# --- Production -------------------------------------------------------------------------------


def test_fully_configured_production_is_accepted() -> None:
    s = settings(**PRODUCTION)
    assert s.is_production
    assert not s.simulator_enabled
    assert s.signup_mode is SignupMode.APPROVAL
    assert s.confirm_callbacks is True


def _only_problem(message: str) -> str:
    lines = message.splitlines()
    assert lines[:2] == ["Configuration error:", "ENVIRONMENT=production refuses to start:"]
    problems = [line.removeprefix("  - ") for line in lines[2:]]
    assert len(problems) == 1, problems
    return problems[0]


def test_production_refuses_the_simulator() -> None:
    problem = _only_problem(refusal(**PRODUCTION | {"simulator": True}))
    assert problem == "SIMULATOR is on; set SIMULATOR=false"


def test_production_refuses_the_mpesa_simulator() -> None:
    problem = _only_problem(refusal(**PRODUCTION | {"mpesa_environment": "simulator"}))
    assert problem.startswith("MPESA_ENVIRONMENT=simulator")


@pytest.mark.parametrize(("name", "placeholder"), sorted(DEV_SECRETS.items()))
def test_production_refuses_each_dev_placeholder_secret(name: str, placeholder: str) -> None:
    problem = _only_problem(refusal(**PRODUCTION | {name: placeholder}))
    assert problem == f"{name.upper()} is a dev- placeholder; set a real secret"
    assert placeholder not in problem


@pytest.mark.parametrize(
    "name",
    ["metrics_token", "whatsapp_app_secret", "mpesa_callback_secret_previous", "mpesa_passkey"],
)
def test_production_refuses_dev_placeholders_in_other_secrets_too(name: str) -> None:
    problem = _only_problem(refusal(**PRODUCTION | {name: "dev-something"}))
    assert problem == f"{name.upper()} is a dev- placeholder; set a real secret"


@pytest.mark.parametrize(
    "name",
    [
        "whatsapp_webhook_secret",
        "mpesa_callback_secret",
        "mpesa_callback_secret_previous",
        "metrics_token",
    ],
)
def test_production_refuses_a_short_secret_of_our_own(name: str) -> None:
    problem = _only_problem(refusal(**PRODUCTION | {name: "x"}))
    assert problem.startswith(f"{name.upper()} is shorter than 16 characters")
    assert settings(**PRODUCTION | {name: "x" * 16}).is_production


@pytest.mark.parametrize("base_url", ["http://pay.example.co.ke", "http://localhost:8000"])
def test_production_refuses_a_plain_http_base_url(base_url: str) -> None:
    problem = _only_problem(refusal(**PRODUCTION | {"base_url": base_url}))
    assert problem.startswith("BASE_URL is not https")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"mpesa_shortcode": SANDBOX_SHORTCODE}, "MPESA_SHORTCODE is the sandbox's 174379"),
        ({"mpesa_passkey": SANDBOX_PASSKEY}, "MPESA_PASSKEY is the sandbox's public passkey"),
    ],
)
def test_production_mpesa_refuses_the_sandbox_shortcode_and_passkey(
    values: dict[str, str], expected: str
) -> None:
    problem = _only_problem(refusal(**PRODUCTION | values))
    assert problem.startswith(expected)
    # A production deploy against Daraja's sandbox (a staging site) uses exactly those.
    staging = PRODUCTION | values | {"mpesa_environment": "sandbox"}
    assert settings(**staging).is_production


@pytest.mark.parametrize(
    "url", ["notaurl", "pay.example.co.ke", "ftp://pay.example.co.ke", "https://"]
)
def test_base_url_must_be_an_http_address(url: str) -> None:
    message = refusal(base_url=url)
    assert "BASE_URL:" in message and "is not an http(s) address" in message


@pytest.mark.parametrize("name", ["mpesa_callback_allowlist", "trusted_proxies"])
def test_an_address_list_with_a_typo_is_refused_at_start(name: str) -> None:
    message = refusal(**{name: "196.201.214.200, 999.1.1.1"})
    assert f"{name.upper()}:" in message and "'999.1.1.1' is not an IP address" in message
    allowed = settings(**{name: "196.201.214.200, 196.201.214.0/24, ::1"})
    assert getattr(allowed, name) == ["196.201.214.200", "196.201.214.0/24", "::1"]


def test_production_refuses_sqlite() -> None:
    problem = _only_problem(refusal(**PRODUCTION | {"database_url": "sqlite+aiosqlite:///./p.db"}))
    assert problem.startswith("DATABASE_URL is SQLite; use PostgreSQL")


def test_production_requires_a_metrics_token() -> None:
    values = {key: value for key, value in PRODUCTION.items() if key != "metrics_token"}
    problem = _only_problem(refusal(**values))
    assert problem == "METRICS_TOKEN is not set; /metrics must be protected"


def test_production_with_defaults_lists_every_problem_and_no_secret() -> None:
    message = refusal(environment="production", whatsapp_app_secret="hunter2-secret")
    for expected in [
        "MPESA_ENVIRONMENT=simulator",
        *(f"{name.upper()} is a dev- placeholder" for name in DEV_SECRETS),
        "DATABASE_URL is SQLite",
        "METRICS_TOKEN is not set",
    ]:
        assert expected in message
    assert "hunter2" not in message
    assert "input_value" not in message


def test_production_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in PRODUCTION.items():
        monkeypatch.setenv(name.upper(), value)
    assert settings().is_production
    monkeypatch.setenv("SIMULATOR", "true")
    with pytest.raises(ValidationError, match="SIMULATOR is on"):
        settings()


# --- .env.example -----------------------------------------------------------------------------

_ASSIGNMENT = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$")


def _example_lines() -> list[tuple[str, str, bool]]:
    """(NAME, value, commented) for every `NAME=value` line of .env.example."""
    found = []
    for line in (REPO_ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        match = _ASSIGNMENT.match(line.strip())
        if match:
            found.append((match[1], match[2].strip(), line.lstrip().startswith("#")))
    return found


def test_env_example_names_every_setting() -> None:
    named = {name for name, _value, _commented in _example_lines()}
    fields = {name.upper() for name in Settings.model_fields}
    assert fields - named == set(), "settings missing from .env.example"
    assert named - fields == set(), ".env.example names settings that do not exist"


def test_env_example_values_are_the_defaults() -> None:
    # Copying .env.example to .env changes nothing until a line is edited.
    from_example = Settings(_env_file=REPO_ROOT / ".env.example")
    assert from_example.model_dump() == settings().model_dump()
    assert any(not commented for _name, _value, commented in _example_lines())


@pytest.mark.parametrize("name", ["mpesa_callback_secret", "mpesa_callback_secret_previous"])
@pytest.mark.parametrize("secret", ["Zk3/q9+XbT1wLm8vR2sYpA==", "a%2Fb-long-enough-secret"])
def test_a_callback_secret_that_cannot_be_a_url_segment_is_refused(name: str, secret: str) -> None:
    message = refusal(**{name: secret})
    assert f"{name.upper()}: may hold only letters, digits, '-' and '_'" in message
    assert secret not in message


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:p@h/d?sslmode=require&channel_binding=require",
        "postgres://u:p@h/d?connect_timeout=10",
        "postgresql+asyncpg://u:p@h/d?application_name=app",
    ],
)
def test_libpq_parameters_asyncpg_does_not_take_are_refused_by_name(url: str) -> None:
    message = refusal(database_url=url)
    assert "DATABASE_URL: has parameters the PostgreSQL driver (asyncpg) does not take: " in message
    assert "u:p@" not in message


def test_parameters_asyncpg_takes_are_kept() -> None:
    given = "postgresql://u:p@h/d?sslmode=require&target_session_attrs=read-write"
    assert settings(database_url=given).database_url == (
        "postgresql+asyncpg://u:p@h/d?ssl=require&target_session_attrs=read-write"
    )
    socket = "postgresql+asyncpg://u:p@/d?host=/var/run/postgresql"
    assert settings(database_url=socket).database_url == socket


@pytest.mark.parametrize("name", ["mpesa_shortcode", "mpesa_party_b"])
@pytest.mark.parametrize("value", ["abc", "17437 9", "12", "174379x"])
def test_a_shortcode_that_is_not_digits_is_refused(name: str, value: str) -> None:
    message = refusal(**{name: value})
    assert f"{name.upper()}: must be the PayBill or till number: digits only" in message


def test_a_shortcode_of_digits_is_kept() -> None:
    assert settings(mpesa_shortcode=" 600100 ", mpesa_party_b="5544332").mpesa_shortcode == "600100"
