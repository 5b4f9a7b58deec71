"""What payers and merchants read about payments. Plain words; never the provider's own text."""

from __future__ import annotations

from datetime import datetime

from invoiceiq.invoices.messages import pay_button
from invoiceiq.invoices.models import Invoice
from invoiceiq.kit.clock import nairobi
from invoiceiq.kit.money import format_kes
from invoiceiq.kit.phone import mask_msisdn
from invoiceiq.notifications.schemas import Outbound, TemplateCall

NOT_YOURS = (
    "This Pay button isn't for this WhatsApp number. If you received an invoice, pay it from the "
    "number it was sent to, or open the invoice link to pay from another number."
)
CANCELLED = "Invoice {number} was cancelled by the business, so it can't be paid."
ALREADY_PAID = "Invoice {number} is already paid{receipt}. Nothing more to pay."
CHECK_PHONE = (
    "Check your phone: enter your M-PESA PIN in the prompt to pay {amount} for invoice {number}."
)
PROMPT_UNSURE = (
    "We could not confirm that M-PESA sent the prompt for invoice {number}. If one is on your "
    "phone, enter your M-PESA PIN there to pay {amount}. If none came, you can tap Pay with "
    "M-PESA again in about {minutes} min."
)
# Why a payer must wait before another prompt (payments/service.py `_seconds_to_wait`), and
# what to do meanwhile; `{again}` is "tap Pay again" in chat, "try again" on the page.
WAITS = {
    "cooldown": (
        "M-PESA needs a pause between two payments of the same amount from one number. Please "
        "wait {seconds} seconds, then {again}."
    ),
    "prompt_open": (
        "An M-PESA prompt is still open on your phone: enter your PIN or cancel it there. "
        "Then, or in {seconds} seconds, {again}."
    ),
    "checking": (
        "We are still checking with M-PESA how your last payment went, and will message you "
        "when we know. If M-PESA sent you a confirmation SMS for it, do not pay again."
    ),
}
OTHER_PAYER = (
    "A payment prompt for invoice {number} was already sent to {phone} from the invoice page. "
    "If that was not meant, wait until it ends, then tap Pay again."
)
CHECK_PHONE_KIND = "pay_check_phone"
LATE_PAYMENT = (
    "\n\nInvoice {number} was already {state} when your payment arrived. {business} has been "
    "told and will contact you about it. Please do not pay again."
)
CONFIRMED_BY_MPESA = "confirmed by M-PESA"

# Why an attempt failed, for the payer and for the merchant (result codes: reference §3.4).
FAILURE_REASONS: dict[str, tuple[str, str]] = {
    "1032": ("you cancelled the M-PESA prompt", "the customer cancelled the M-PESA prompt"),
    "1037": (
        "your phone did not answer the M-PESA prompt in time",
        "the customer's phone did not answer the M-PESA prompt in time",
    ),
    "1": ("your M-PESA balance is not enough", "the customer's M-PESA balance was not enough"),
    "2001": ("the M-PESA PIN was wrong", "the customer entered a wrong M-PESA PIN"),
    "17": (
        "M-PESA blocks a second payment of the same amount within 2 minutes",
        "M-PESA blocked a repeat payment within 2 minutes",
    ),
    "busy": (
        "another M-PESA prompt was already open on your phone (finish or cancel it first)",
        "another M-PESA prompt was already open on the customer's phone",
    ),
    "no_response": (
        "M-PESA did not confirm the payment in time",
        "M-PESA did not confirm the payment in time",
    ),
    "unreachable": (
        "we could not reach M-PESA just now",
        "we could not reach M-PESA just now",
    ),
}
# Why an attempt given up without ever hearing from M-PESA is flagged: its push may have raised
# the prompt (the push's answer was lost, so there is no CheckoutRequestID to query) and its
# callback never came, so the customer may have paid.
OUTCOME_UNKNOWN_REASON = (
    "push outcome unknown: M-PESA sent no answer and no callback, so the customer may have "
    "paid; check the M-PESA statement"
)
# A success callback that M-PESA's query says failed.
CLAIM_DENIED_REASON = "the callback said paid, but M-PESA's query denies it"
# A success callback M-PESA's query never confirmed within RECONCILE_GIVE_UP.
CLAIM_UNCONFIRMED_REASON = "M-PESA never confirmed the reported payment"
# Two ids M-PESA gave for one push disagree (the push's answer and its callback).
CHECKOUT_ID_DIFFERS_REASON = "the push's CheckoutRequestID differs from its callback's"
# The review reasons above in the merchant's words: the reason itself is the operator's note.
FOR_MERCHANT = {
    OUTCOME_UNKNOWN_REASON: "M-PESA never told us how it ended, so the customer may have paid",
    CLAIM_DENIED_REASON: "a payment was reported that M-PESA does not confirm",
    CHECKOUT_ID_DIFFERS_REASON: "M-PESA's records of the payment disagree",
}
# How the review reason of a success for another amount begins (payments/settlement.py).
AMOUNT_DIFFERS = "M-PESA reported"
# The questions "did the customer pay?" that a later confirmation answers on its own.
UNCONFIRMED_REASONS = (OUTCOME_UNKNOWN_REASON, CLAIM_UNCONFIRMED_REASON)
# Reviews during which the customer may have paid (or paid another amount): nobody is invited
# to pay the invoice again until a person has settled them.
MAY_HAVE_PAID_REASONS = (*UNCONFIRMED_REASONS, AMOUNT_DIFFERS)
UNCONFIRMED_ON_PAGE = (
    "We could not confirm whether this payment went through. If you received an M-PESA "
    "confirmation SMS for it, do not pay again: the business will confirm your payment. "
    "If you did not, you can pay again."
)
GENERIC_REASON = ("M-PESA could not complete the payment", "M-PESA could not complete the payment")


def reasons(code: str | None) -> tuple[str, str]:
    return FAILURE_REASONS.get((code or "").strip(), GENERIC_REASON)


def _stamp(moment: datetime) -> str:
    return nairobi(moment).strftime("%d %b %Y, %H:%M") + " (Nairobi)"


def receipt_for_customer(
    invoice: Invoice,
    *,
    business_name: str,
    receipt: str | None,
    paid_at: datetime,
    link: str,
    invoice_was: str | None = None,
) -> Outbound:
    """`invoice_was`: the invoice was already cancelled (or paid) when this money came in; the
    money is kept for review and the payer told the business will contact them. Told in the
    free-form message only: the approved template has no place for it, so outside the 24-hour
    window the payer gets the plain receipt (the merchant, the review alert; the invoice page
    says it too)."""
    reference = receipt or CONFIRMED_BY_MPESA
    amount = format_kes(invoice.amount_cents)
    stamp = _stamp(paid_at)
    text = (
        f"Payment received. Thank you!\n\n"
        f"{amount} to {business_name} for invoice {invoice.number}\n"
        f"M-PESA receipt: {reference}\n"
        f"Paid: {stamp}\n\n"
        f"Your receipt: {link}"
    )
    if invoice_was:
        text += LATE_PAYMENT.format(
            number=invoice.number, state=invoice_was, business=business_name
        )
    return Outbound(
        kind="receipt",
        text=text,
        template=TemplateCall(
            "payment_receipt", (amount, invoice.number, business_name, reference, link, stamp)
        ),
    )


def paid_by_other(
    invoice: Invoice, *, business_name: str, payer: str, receipt: str | None, link: str
) -> Outbound:
    """To the invoice's customer when another number paid it from the page: not a receipt
    ("your payment"), they did not pay; but the invoice is settled, so they do not pay again."""
    reference = receipt or CONFIRMED_BY_MPESA
    amount = format_kes(invoice.amount_cents)
    masked = mask_msisdn(payer)
    text = (
        f"Invoice {invoice.number} from {business_name} for {amount} has been paid from another "
        f"M-PESA number ({masked}).\nM-PESA receipt: {reference}\nThe invoice, {link}, shows "
        "it paid. There is nothing more to pay."
    )
    return Outbound(
        kind="invoice_paid",
        text=text,
        template=TemplateCall(
            "invoice_paid_by_other",
            (invoice.number, business_name, amount, masked, reference, link),
        ),
    )


def receipt_for_merchant(
    invoice: Invoice, *, payer: str, receipt: str | None, paid_at: datetime, link: str
) -> Outbound:
    """`payer`: the number that paid, the invoice's customer's or another typed on its page."""
    reference = receipt or CONFIRMED_BY_MPESA
    amount = format_kes(invoice.amount_cents)
    masked = mask_msisdn(payer)
    if payer != invoice.customer_phone:
        who = f"{masked} (another number, from the invoice page)"
    elif invoice.customer_name:
        who = f"{invoice.customer_name} ({masked})"
    else:
        who = masked
    stamp = _stamp(paid_at)
    text = (
        f"Paid: invoice {invoice.number}, {amount} from {who}.\n"
        f"M-PESA receipt: {reference}\n"
        f"Paid: {stamp}\n"
        f"Link: {link}"
    )
    return Outbound(
        kind="payment_received",
        text=text,
        template=TemplateCall(
            "merchant_payment_received", (invoice.number, amount, masked, reference, stamp, link)
        ),
    )


def refusal(text: str) -> Outbound:
    return Outbound(kind="pay_refused", text=text)


def already_paid(number: str, *, receipt: str | None) -> Outbound:
    shown = f" (M-PESA receipt {receipt})" if receipt else ""
    return refusal(ALREADY_PAID.format(number=number, receipt=shown))


def wait_text(reason: str, seconds: int, *, again: str) -> str:
    return WAITS[reason].format(seconds=seconds, again=again)


def wait(reason: str, seconds: int, *, number: str) -> Outbound:
    """With the Pay button to tap once the wait is over (none while M-PESA is asked how the
    last payment went: its answer comes as a message of its own)."""
    text = wait_text(reason, seconds, again="tap Pay again")
    if reason == "checking":
        return Outbound(kind="pay_wait", text=text)
    return Outbound(kind="pay_wait", text=text, buttons=(pay_button(number),))


def other_payer(invoice: Invoice, payer: str) -> Outbound:
    return refusal(OTHER_PAYER.format(number=invoice.number, phone=mask_msisdn(payer)))


def prompt_unsure(invoice: Invoice, *, minutes: int) -> Outbound:
    """ "Check your phone" when M-PESA's answer to the push was lost: a prompt may or may not
    have reached the phone, so the payer hears both, and when they can tap Pay again."""
    amount = format_kes(invoice.amount_cents)
    return Outbound(
        kind=CHECK_PHONE_KIND,
        text=PROMPT_UNSURE.format(amount=amount, number=invoice.number, minutes=minutes),
    )


def check_phone(invoice: Invoice) -> Outbound:
    amount = format_kes(invoice.amount_cents)
    return Outbound(
        kind=CHECK_PHONE_KIND, text=CHECK_PHONE.format(amount=amount, number=invoice.number)
    )


def failure_for_customer(
    invoice: Invoice, *, business_name: str, code: str | None, page_link: str | None = None
) -> Outbound:
    """`page_link` when the payer is not the invoice's customer (they paid from its page with
    another number): a Pay button would refuse them, so the message sends them back to the page.
    Outside their 24-hour window only the template gets through; its button's refusal says
    to open the invoice link, so it still goes rather than nothing."""
    reason = reasons(code)[0]
    amount = format_kes(invoice.amount_cents)
    text = (
        f"Your M-PESA payment for invoice {invoice.number} ({amount}) did not go through: "
        f"{reason}.\nThe invoice is still open: "
    )
    button = pay_button(invoice.number)
    template = TemplateCall(
        "payment_failed", (invoice.number, amount, business_name, reason), (button[0],)
    )
    if page_link:
        return Outbound(
            kind="payment_failed", text=f"{text}to try again, open {page_link}", template=template
        )
    return Outbound(
        kind="payment_failed",
        text=f"{text}tap Pay with M-PESA to try again.",
        buttons=(button,),
        template=template,
    )


def unconfirmed_for_customer(
    invoice: Invoice, *, business_name: str, page_link: str | None = None
) -> Outbound:
    """The attempt was given up, but M-PESA may have taken the money: not "did not go
    through", and no plain invitation to pay again. `page_link` as in failure_for_customer."""
    amount = format_kes(invoice.amount_cents)
    text = (
        f"We could not confirm whether your M-PESA payment for invoice {invoice.number} "
        f"({amount}) to {business_name} went through: M-PESA did not tell us.\n"
        f"If you received an M-PESA confirmation SMS for it, please do not pay again: "
        f"{business_name} will confirm your payment. If you did not, "
    )
    button = pay_button(invoice.number)
    template = TemplateCall(
        "payment_unconfirmed", (invoice.number, amount, business_name), (button[0],)
    )
    if page_link:
        return Outbound(
            kind="payment_unconfirmed",
            text=f"{text}open {page_link} to try again.",
            template=template,
        )
    return Outbound(
        kind="payment_unconfirmed",
        text=f"{text}tap Pay with M-PESA to try again.",
        buttons=(button,),
        template=template,
    )


def failure_for_merchant(
    invoice: Invoice, *, code: str | None, other_payer: bool = False
) -> Outbound:
    """`other_payer`: someone paying from the invoice page with another number; what they did
    is not the customer's doing."""
    reason = reasons(code)[1]
    attempt = f"A payment attempt for invoice {invoice.number} ({format_kes(invoice.amount_cents)})"
    if other_payer:
        reason = reason.replace("the customer's", "the payer's").replace(
            "the customer", "the payer"
        )
        attempt += " from another number, on the invoice page,"
    text = (
        f"{attempt} did not go through: {reason}. The invoice is still open; the customer can "
        "try again."
    )
    return Outbound(kind="payment_failed", text=text)


def review_for_merchant(invoice: Invoice | None, *, amount_cents: int, reason: str) -> Outbound:
    number = invoice.number if invoice else "(unknown)"
    amount = format_kes(amount_cents)
    reason = FOR_MERCHANT.get(reason, reason)
    text = (
        f"A payment of {amount} for invoice {number} needs a review: {reason}. "
        "Our team will check it against the M-PESA statement."
    )
    return Outbound(
        kind="review_alert",
        text=text,
        template=TemplateCall("merchant_payment_review", (amount, number, reason)),
    )
