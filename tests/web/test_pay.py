"""Paying from the page: CSRF, the confirmed number, the same rules as the Pay button, limits."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa

from invoiceiq.config import Settings
from invoiceiq.db.engine import SessionFactory
from invoiceiq.db.models import Invoice, OutboxMessage, Payment
from invoiceiq.invoices.states import InvoiceStatus
from invoiceiq.kit.clock import utcnow
from invoiceiq.payments.states import PaymentStatus
from invoiceiq.web import csrf
from invoiceiq.web.service import PAY_PER_CLIENT
from support import factories
from support.apps import in_process
from support.db import make_settings

JSON = {"Accept": "application/json"}
HTML = {"Accept": "text/html,application/xhtml+xml"}


async def make_invoice(sessions: SessionFactory, **values: object) -> Invoice:
    async with sessions() as session, session.begin():
        return await factories.invoice(session, **values)


async def payments(sessions: SessionFactory) -> list[Payment]:
    async with sessions() as session:
        return list(await session.scalars(sa.select(Payment).order_by(Payment.created_at)))


async def open_form(http: httpx.AsyncClient, invoice: Invoice) -> str:
    """Load the page as a browser does (it sets the cookie); the form's CSRF field."""
    page = await http.get(f"/i/{invoice.public_token}", headers=HTML)
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


async def pay(
    http: httpx.AsyncClient, invoice: Invoice, field: str | None, phone: str = "", **kw: object
) -> httpx.Response:
    data = {"phone": phone} if field is None else {"csrf": field, "phone": phone}
    headers = kw.pop("headers", JSON)
    return await http.post(f"/i/{invoice.public_token}/pay", data=data, headers=headers)  # type: ignore[arg-type]


async def test_paying_starts_one_attempt_to_the_customers_own_number(
    settings: Settings, sessions: SessionFactory
) -> None:
    invoice = await make_invoice(sessions, amount_cents=150_000)
    async with in_process(settings) as http:
        field = await open_form(http, invoice)
        started = await pay(http, invoice, field)
        again = await pay(http, invoice, field)
    assert started.status_code == 202
    assert started.json() == {
        "outcome": "started",
        "message": "Check the phone 2547•••••678: enter your M-PESA PIN in the prompt to pay "
        "KSh 1,500.",
        "status": "SENT",
    }
    # The same rules as the WhatsApp button: one open attempt, nothing stacked.
    assert again.status_code == 200 and again.json()["outcome"] == "open"
    [payment] = await payments(sessions)
    assert payment.phone == "254712345678" and payment.amount_cents == 150_000
    async with sessions() as session:
        push = await session.scalar(
            sa.select(OutboxMessage).where(OutboxMessage.topic == "mpesa.stk_push")
        )
    assert push is not None and push.payload == {"payment_id": str(payment.id)}


async def test_another_kenyan_mobile_typed_is_used(
    settings: Settings, sessions: SessionFactory
) -> None:
    invoice = await make_invoice(sessions)
    async with in_process(settings) as http:
        field = await open_form(http, invoice)
        started = await pay(http, invoice, field, phone="+254 733-000 111")
    assert started.status_code == 202 and "2547•••••111" in started.json()["message"]
    [payment] = await payments(sessions)
    assert payment.phone == "254733000111"


@pytest.mark.parametrize(
    ("typed", "fragment"),
    [
        ("0201234567", "landline"),
        ("+255712345678", "Only Kenyan mobile numbers"),
        ("07123", "too short"),
        ("07one", "only digits"),
    ],
)
async def test_a_number_that_cannot_pay_is_refused_clearly(
    settings: Settings, sessions: SessionFactory, typed: str, fragment: str
) -> None:
    invoice = await make_invoice(sessions)
    async with in_process(settings) as http:
        field = await open_form(http, invoice)
        refused = await pay(http, invoice, field, phone=typed)
        as_page = await pay(http, invoice, field, phone=typed, headers=HTML)
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert fragment in error["message"] and error["fields"]["phone"] == error["message"]
    assert as_page.status_code == 422 and fragment in as_page.text
    assert f'href="/i/{invoice.public_token}"' in as_page.text  # a way back to the invoice
    assert await payments(sessions) == []


async def test_without_the_csrf_token_nothing_is_started(
    settings: Settings, sessions: SessionFactory
) -> None:
    invoice, other = await make_invoice(sessions), await make_invoice(sessions)
    async with in_process(settings) as http:
        field = await open_form(http, invoice)
        other_field = await open_form(http, other)
        missing = await pay(http, invoice, None)
        forged = await pay(http, invoice, "1700000000." + "0" * 64)
        for_another_invoice = await pay(http, invoice, other_field)
        http.cookies.clear()  # a cross-site post: no cookie of ours comes with it
        without_cookie = await pay(http, invoice, field)
        as_page = await pay(http, invoice, field, headers=HTML)
    for refused in (missing, forged, for_another_invoice, without_cookie):
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "form_expired"
        assert "Reload the invoice page" in refused.json()["error"]["message"]
    assert as_page.status_code == 403 and "Reload the invoice page" in as_page.text
    assert await payments(sessions) == []


async def test_opening_a_second_invoice_keeps_the_first_forms_cookie(
    settings: Settings, sessions: SessionFactory
) -> None:
    """Each view sets the same cookie again (Lax, so a link from WhatsApp brings it), lasting as
    long as the newest form; the first page's form still pays."""
    first, second = await make_invoice(sessions), await make_invoice(sessions)
    async with in_process(settings) as http:
        field = await open_form(http, first)
        cookie = http.cookies[csrf.COOKIE]
        again = await http.get(f"/i/{second.public_token}", headers=HTML)
        started = await pay(http, first, field)

    set_again = again.headers["set-cookie"]
    assert f"{csrf.COOKIE}={cookie}" in set_again
    assert "samesite=lax" in set_again.lower() and f"max-age={csrf.MAX_AGE}" in set_again.lower()
    assert started.status_code == 202 and started.json()["outcome"] == "started", started.text
    assert len(await payments(sessions)) == 1


def test_csrf_tokens_expire_and_are_bound_to_cookie_and_invoice() -> None:
    secret = csrf.secret_for(make_settings())
    cookie = csrf.new_cookie()
    field = csrf.issue(secret, cookie=cookie, token="tok", now=1_000_000)
    assert csrf.verify(secret, cookie=cookie, token="tok", field=field, now=1_000_100)
    assert not csrf.verify(
        secret, cookie=cookie, token="tok", field=field, now=1_000_000 + 13 * 3600
    )
    assert not csrf.verify(
        secret, cookie=csrf.new_cookie(), token="tok", field=field, now=1_000_100
    )
    assert not csrf.verify(secret, cookie=cookie, token="tok2", field=field, now=1_000_100)
    other = csrf.secret_for(make_settings(mpesa_callback_secret="rotated"))
    assert not csrf.verify(other, cookie=cookie, token="tok", field=field, now=1_000_100)
    # A forged field whose time holds digits that are no number is refused, not a crash.
    _, _, mac = field.partition(".")
    assert not csrf.verify(secret, cookie=cookie, token="tok", field=f"1²³.{mac}", now=1_000_100)


async def test_without_script_the_form_posts_and_comes_back_to_the_page(
    settings: Settings, sessions: SessionFactory
) -> None:
    invoice = await make_invoice(sessions)
    async with in_process(settings) as http:
        field = await open_form(http, invoice)
        posted = await pay(http, invoice, field, headers=HTML)
        page = await http.get(posted.headers["location"], headers=HTML)
    assert posted.status_code == 303 and posted.headers["location"] == f"/i/{invoice.public_token}"
    assert "Waiting for the M-PESA PIN on 2547•••••678." in page.text
    assert len(await payments(sessions)) == 1


async def test_paid_and_cancelled_invoices_start_nothing(
    settings: Settings, sessions: SessionFactory
) -> None:
    paid = await make_invoice(sessions)
    cancelled = await make_invoice(sessions)
    async with in_process(settings) as http:
        paid_field, cancelled_field = await open_form(http, paid), await open_form(http, cancelled)
        async with sessions() as session, session.begin():
            for invoice, status in (
                (paid, InvoiceStatus.PAID),
                (cancelled, InvoiceStatus.CANCELLED),
            ):
                await session.execute(
                    sa.update(Invoice).where(Invoice.id == invoice.id).values(status=status)
                )
        already = await pay(http, paid, paid_field)
        refused = await pay(http, cancelled, cancelled_field)
    assert already.status_code == 200 and already.json()["outcome"] == "paid"
    assert refused.status_code == 409
    assert "cancelled this invoice" in refused.json()["error"]["message"]
    assert await payments(sessions) == []


async def test_three_prompts_per_invoice_per_hour(
    settings: Settings, sessions: SessionFactory
) -> None:
    invoice = await make_invoice(sessions)
    now = utcnow()
    for minutes, code in ((50, "1032"), (30, "1037"), (10, "2001")):
        await add_failed(sessions, invoice, at=now - timedelta(minutes=minutes), code=code)
    # An attempt M-PESA refused outright raised no prompt: it does not count.
    await add_failed(sessions, invoice, at=now - timedelta(minutes=5), code="busy", prompted=False)
    async with in_process(settings) as http:
        field = await open_form(http, invoice)
        refused = await pay(http, invoice, field, phone="0733000111")
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "rate_limited"
    assert error["message"] == (
        "This invoice has had 3 payment prompts in the last hour. To protect the customer's "
        "phone, the next one can be sent in 10 min."
    )
    assert 540 <= int(refused.headers["retry-after"]) <= 600
    assert len(await payments(sessions)) == 4


async def test_prompts_older_than_an_hour_do_not_count(
    settings: Settings, sessions: SessionFactory
) -> None:
    invoice = await make_invoice(sessions)
    now = utcnow()
    for minutes in (70, 65, 61, 30, 20):
        await add_failed(sessions, invoice, at=now - timedelta(minutes=minutes), code="1032")
    async with in_process(settings) as http:
        started = await pay(http, invoice, await open_form(http, invoice), phone="0733000111")
    assert started.status_code == 202


async def add_failed(
    sessions: SessionFactory, invoice: Invoice, *, at: object, code: str, prompted: bool = True
) -> None:
    async with sessions() as session, session.begin():
        await factories.payment(
            session,
            invoice=invoice,
            status=PaymentStatus.FAILED,
            result_code=code,
            created_at=at,
            push_sent_at=at,
            checkout_request_id=f"ws_CO_{code}_{at}" if prompted else None,
        )


async def test_m_pesa_cooldown_is_a_clear_wait(
    settings: Settings, sessions: SessionFactory
) -> None:
    invoice = await make_invoice(sessions)
    await add_failed(sessions, invoice, at=utcnow() - timedelta(seconds=30), code="1032")
    async with in_process(settings) as http:
        refused = await pay(http, invoice, await open_form(http, invoice))
    assert refused.status_code == 429
    message = refused.json()["error"]["message"]
    assert re.fullmatch(
        r"M-PESA needs a pause between two payments of the same amount from one number\. "
        r"Please wait \d+ seconds, then try again\.",
        message,
    )


async def test_one_client_address_is_limited_across_invoices(
    settings: Settings, sessions: SessionFactory
) -> None:
    invoices = [await make_invoice(sessions, customer_phone=f"25471100000{n}") for n in range(2)]
    async with in_process(settings, client=("203.0.113.7", 4000)) as http:
        fields = [await open_form(http, invoice) for invoice in invoices]
        answers = [
            await pay(http, invoices[n % 2], fields[n % 2]) for n in range(PAY_PER_CLIENT.count)
        ]
        refused = await pay(http, invoices[0], fields[0])
    async with in_process(settings, client=("203.0.113.8", 4000)) as neighbour:
        other = await pay(neighbour, invoices[0], await open_form(neighbour, invoices[0]))
    assert all(answer.status_code in (200, 202) for answer in answers)
    assert refused.status_code == 429
    assert refused.json()["error"]["message"].startswith(
        "Too many payment requests came from your network. Please try again in "
    )
    assert int(refused.headers["retry-after"]) <= PAY_PER_CLIENT.seconds
    assert other.status_code == 200  # another address is not limited (the attempt is open)


async def test_the_client_limit_is_shared_by_every_web_process(
    database_url: str, sessions: SessionFactory
) -> None:
    """Two apps with their own engines (two processes, as far as state goes) count together."""
    invoice = await make_invoice(sessions)
    settings = make_settings(database_url=database_url)
    client = ("198.51.100.9", 4000)
    async with (
        in_process(settings, client=client) as first,
        in_process(settings, client=client) as second,
    ):
        field = await open_form(first, invoice)
        second.cookies = first.cookies
        statuses = [
            (await pay(first if n % 2 else second, invoice, field)).status_code
            for n in range(PAY_PER_CLIENT.count + 1)
        ]
    assert statuses[:-1].count(429) == 0 and statuses[-1] == 429


async def test_forwarded_for_is_believed_only_from_a_trusted_proxy(
    database_url: str, sessions: SessionFactory
) -> None:
    invoice = await make_invoice(sessions)
    proxy = make_settings(database_url=database_url, trusted_proxies="10.0.0.0/8")

    async def flood(http: httpx.AsyncClient, forwarded: str) -> int:
        field = await open_form(http, invoice)
        headers = {**JSON, "X-Forwarded-For": forwarded}
        last = 0
        for _ in range(PAY_PER_CLIENT.count + 1):
            last = (await pay(http, invoice, field, headers=headers)).status_code
        return last

    # Behind our proxy, each client is limited by its own address, whatever it claims.
    async with in_process(proxy, client=("10.1.2.3", 4000)) as http:
        assert await flood(http, "1.1.1.1, 192.0.2.10") == 429
        assert (
            await pay(
                http,
                invoice,
                await open_form(http, invoice),
                headers={**JSON, "X-Forwarded-For": "192.0.2.11"},
            )
        ).status_code == 200
    # From an untrusted peer the header is ignored: changing it does not escape the limit.
    async with in_process(proxy, client=("192.0.2.50", 4000)) as http:
        assert await flood(http, "192.0.2.60") == 429
        refused = await pay(
            http,
            invoice,
            await open_form(http, invoice),
            headers={**JSON, "X-Forwarded-For": "192.0.2.61"},
        )
        assert refused.status_code == 429


async def add_prompt(
    sessions: SessionFactory, invoice: Invoice, phone: str, *, minutes_ago: int
) -> None:
    """A prompt M-PESA raised on `phone` for `invoice`, cancelled by its owner."""
    at = utcnow() - timedelta(minutes=minutes_ago)
    async with sessions() as session, session.begin():
        await factories.payment(
            session,
            invoice=invoice,
            phone=phone,
            status=PaymentStatus.FAILED,
            result_code="1032",
            created_at=at,
            push_sent_at=at,
            checkout_request_id=f"ws_CO_{invoice.number}_{minutes_ago}",
        )


STRANGER = "254733000111"


async def test_a_number_not_the_customers_gets_three_prompts_an_hour_across_invoices(
    settings: Settings, sessions: SessionFactory
) -> None:
    others = [
        await make_invoice(sessions, customer_phone=f"25471100000{n}", amount_cents=10_000 + n)
        for n in range(4)
    ]
    for n, minutes in enumerate((50, 30, 10)):
        await add_prompt(sessions, others[n], STRANGER, minutes_ago=minutes)
    async with in_process(settings) as http:
        field = await open_form(http, others[3])
        refused = await pay(http, others[3], field, phone="0733000111")
        own = await pay(http, others[3], field)  # the invoice's customer can still pay
    assert refused.status_code == 429
    # Neither how many prompts that number had nor when: its owner's business.
    assert refused.json()["error"]["message"] == (
        "A payment prompt can't be sent to that number just now. Try again later, or pay from "
        "the number the invoice was sent to."
    )
    assert refused.headers["retry-after"] == "3600"
    assert own.status_code == 202
    assert [p.phone for p in await payments(sessions)][-1] == "254711000003"


async def test_prompts_for_the_numbers_own_invoices_do_not_count_as_paying_for_others(
    settings: Settings, sessions: SessionFactory
) -> None:
    own = [await make_invoice(sessions, customer_phone=STRANGER) for _ in range(2)]
    other = [await make_invoice(sessions, customer_phone=f"25471100000{n}") for n in range(3)]
    for n, invoice in enumerate([*own, *other[:2]]):
        await add_prompt(sessions, invoice, STRANGER, minutes_ago=50 - 10 * n)
    async with in_process(settings) as http:
        started = await pay(http, other[2], await open_form(http, other[2]), phone="0733000111")
    assert started.status_code == 202


async def test_a_number_not_the_customers_is_not_told_why_it_must_wait(
    settings: Settings, sessions: SessionFactory
) -> None:
    """Its owner is answering a prompt for another business's invoice: that stays private."""
    theirs = await make_invoice(sessions, customer_phone=STRANGER)
    async with sessions() as session, session.begin():
        await factories.payment(session, invoice=theirs, push_sent_at=utcnow())
    invoice = await make_invoice(sessions)
    async with in_process(settings) as http:
        refused = await pay(http, invoice, await open_form(http, invoice), phone="0733000111")
    assert refused.status_code == 429
    assert refused.json()["error"]["message"] == (
        "A payment prompt can't be sent to that number just now. Try again in a few minutes."
    )
    assert refused.headers["retry-after"] == "120"


async def test_addresses_of_one_ipv6_network_share_the_client_limit(
    settings: Settings, sessions: SessionFactory
) -> None:
    invoice = await make_invoice(sessions)
    async with in_process(settings, client=("2001:db8:1:2::1", 4000)) as http:
        field = await open_form(http, invoice)
        for _ in range(PAY_PER_CLIENT.count):
            assert (await pay(http, invoice, field)).status_code in (200, 202)
    async with in_process(settings, client=("2001:db8:1:2:9::7", 4000)) as same_network:
        refused = await pay(same_network, invoice, await open_form(same_network, invoice))
    assert refused.status_code == 429


async def test_paying_again_while_the_push_answer_is_lost_does_not_say_a_prompt_came(
    settings: Settings, sessions: SessionFactory
) -> None:
    invoice = await make_invoice(sessions)
    async with sessions() as session, session.begin():
        pushed = utcnow() - timedelta(seconds=40)
        await factories.payment(session, invoice=invoice, push_sent_at=pushed)
    async with in_process(settings) as http:
        answer = await pay(http, invoice, await open_form(http, invoice))
    assert answer.status_code == 200 and answer.json()["outcome"] == "open"
    assert answer.json()["message"].startswith(
        "We could not confirm that M-PESA sent a prompt to 2547•••••678. If one came, enter "
        "your PIN there."
    )
